"""``python -m notelett``: the same CLI as the ``notelett`` script."""

from notelett.script import main

if __name__ == "__main__":
    main()
