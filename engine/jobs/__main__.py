"""``python -m engine.jobs [--once] [--idle-exit S] [--runs DIR]``: the worker alone.

The same loop as ``python -m engine worker``, started without the CLI's command discovery so a
detached worker does not depend on every other command module importing cleanly.
"""
import sys

from engine.jobs.command import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
