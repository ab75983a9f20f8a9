from actors.alerts.actor import main

main()
