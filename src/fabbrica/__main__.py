from fabbrica.cli.main import main

main()
