from tritonop.cli import main

main()
