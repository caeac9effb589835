from mmemu.cli import main

main()
