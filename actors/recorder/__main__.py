from actors.recorder.actor import main

main()
