from actors.dashboard.actor import main

main()
