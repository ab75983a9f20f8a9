from actors.marketdata.actor import main

main()
