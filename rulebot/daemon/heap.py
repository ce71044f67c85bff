"""Giving the C heap's free memory back to the system after a large load.

Why: loading 10,000 rules allocates and frees some 150 MB of short-lived
objects (the YAML node tree, positions, compiled trees). Python returns an
arena to the system only when every block in it is free, and glibc's malloc
keeps what it freed at the top of its heaps; after a load the daemon held
~20 MB it no longer used (bench/memory.py). glibc's malloc_trim(0) releases
the free pages of every heap. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

_trim: Callable[[int], int] | None = None
_looked = False


def release_free_memory() -> bool:
    """Return the C heap's free pages to the system (glibc); whether it could.
    ctypes releases the interpreter lock during the call (a few ms after a
    large load), so other threads go on meanwhile."""
    global _trim, _looked
    if not _looked:
        _looked = True
        name = ctypes.util.find_library("c")
        try:
            _trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):  # not glibc
            _trim = None
    if _trim is None:
        return False
    _trim(0)
    return True
