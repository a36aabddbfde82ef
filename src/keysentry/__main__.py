from keysentry.cli import main

main()
