"""The callback types every long engine computation shares (torch-free, so requests and the CLI
can name them without importing torch)."""
from __future__ import annotations

from typing import Callable

#: ``progress(done, total)``: called after each unit of work (a batch, a cell, an image).
Progress = Callable[[int, int], None]
#: ``should_stop() -> bool``: polled between units of work; True stops the computation.
ShouldStop = Callable[[], bool]
