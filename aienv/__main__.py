from aienv.cli.main import main

main()
