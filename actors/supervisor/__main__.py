from actors.supervisor.cli import main

main()
