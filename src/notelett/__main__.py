"""``python -m notelett``: the same CLI as the ``notelett`` script."""

from notelett.cli import main

if __name__ == "__main__":
    main()
