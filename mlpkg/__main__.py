from mlpkg.cli import main

main()
