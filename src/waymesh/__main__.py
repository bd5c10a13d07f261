from waymesh.cli.main import main

main()
