from purchases.load.run import main

main()
