from mongrate.cli import main

main()
