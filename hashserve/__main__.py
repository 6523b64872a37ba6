from hashserve.cli import main

main()
