"""Real environment faults for tests: a tiny full disk and a read-only folder (tmpfs mounts).

Both mount a ``tmpfs`` (Linux, as root or with ``CAP_SYS_ADMIN``); where mounting is not permitted
the test is skipped with the reason. The mount is always undone, even when the test fails.

    from faults import fill, full_disk, read_only_dir

    with full_disk(tmp_path, size_kb=256) as folder:        # a folder on a 256 KiB disk
        fill(folder, leave_bytes=4096)                      # ... with 4 KiB left
        ...
    with read_only_dir(tmp_path, populate=write_files) as folder:  # written, then made read-only
        ...

Root ignores permission bits (``chmod 555`` stops nobody in a test run as root), so a read-only
folder here is a read-only mount: every write fails with ``EROFS``, for everyone.
"""
from __future__ import annotations

import errno
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import pytest


def _mount(args: list[str], what: str) -> None:
    """Run ``mount ARGS`` or skip the test, saying why (not Linux, not permitted, no mount)."""
    if os.name != "posix":
        pytest.skip(f"{what} needs a tmpfs mount (Linux)")
    try:
        done = subprocess.run(["mount", *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"{what} needs `mount`, which cannot run here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"{what} needs a tmpfs mount, which is not permitted here: {done.stderr.strip()}")


def _unmount(folder: Path) -> None:
    """Undo a mount (lazily when something still holds a file open in it)."""
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def tmpfs(folder: Path, size_kb: int | None = None) -> Iterator[Path]:
    """Mount a fresh tmpfs at ``folder`` (made if missing; ``size_kb`` KiB, default the system's)
    for the block; skip the test when mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={int(size_kb)}k" if size_kb else "size=16m"
    _mount(["-t", "tmpfs", "-o", options, "tmpfs", str(folder)], "this test")
    try:
        yield folder
    finally:
        _unmount(folder)


@contextmanager
def full_disk(tmp_path: Path, size_kb: int = 256, name: str = "full-disk") -> Iterator[Path]:
    """A folder ``tmp_path/name`` on a disk of ``size_kb`` KiB (a tmpfs) for the block: writes
    beyond its size fail with ``ENOSPC``; :func:`fill` fills it. Skips when it cannot be made."""
    with tmpfs(tmp_path / name, size_kb) as folder:
        yield folder


@contextmanager
def read_only_dir(tmp_path: Path, populate: Callable[[Path], None] | None = None,
                  name: str = "read-only") -> Iterator[Path]:
    """A read-only folder ``tmp_path/name`` for the block (a tmpfs remounted read-only, so even
    root cannot write: ``EROFS``); ``populate(folder)`` writes its files first. Skips when it
    cannot be made."""
    with tmpfs(tmp_path / name) as folder:
        if populate is not None:
            populate(folder)
        _mount(["-o", "remount,ro", str(folder)], "a read-only folder")
        yield folder


def fill(folder: Path, leave_bytes: int = 0, name: str = "filler.bin") -> Path:
    """Fill the disk ``folder`` is on with the file ``folder/name`` until a write fails with
    ``ENOSPC``, then give back ``leave_bytes`` (about: the file system rounds to its blocks).
    Returns the filler file (delete it to free the space)."""
    filler = folder / name
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    size = filler.stat().st_size
    os.truncate(filler, max(size - int(leave_bytes), 0))
    return filler
