from actors.strategy.actor import main

main()
