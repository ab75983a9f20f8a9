from actors.reconciler.actor import main

main()
