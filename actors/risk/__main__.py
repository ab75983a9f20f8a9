from actors.risk.actor import main

main()
