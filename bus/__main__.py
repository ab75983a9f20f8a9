from bus.proxy import main

main()
