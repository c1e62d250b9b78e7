"""``python -m engine ...``: the command-line client of the engine."""
import sys

from engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
