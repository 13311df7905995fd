"""``python -m trovedb``: the same as the ``trovedb`` command."""

from trovedb.cli import main_exit

main_exit()
