"""``python -m mmemu`` is the ``mmemu`` command."""

from mmemu.cli import main

main()
