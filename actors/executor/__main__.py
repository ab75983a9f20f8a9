from actors.executor.actor import main

main()
