"""``python -m opsgate``: the same entry point as the ``opsgate`` console script."""

from opsgate.cli import main

if __name__ == "__main__":
    main()
