"""``python -m trovedb``: the same as the ``trovedb`` command."""

from trovedb.cli import main_exit

if __name__ == "__main__":
    main_exit()
