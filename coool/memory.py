"""Resident memory that follows the work in flight, not the length of the run.

glibc's malloc gives each thread that allocates its own arena (up to 8 per
core) and keeps what is freed there for reuse. A run decodes frames in
worker threads and encodes images in others, so the arenas fill one by one
and the process's resident memory kept growing with the number of videos
although no video's data was still held (bench figure 5b: with two videos
in flight, 4 -> 16 videos grew 326 -> 441 MiB; with two arenas, 363 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameter number for the arena limit (glibc malloc.h).
_M_ARENA_MAX = -8
# Two arenas: the event loop's and one shared by the worker threads; few threads
# allocate at the same moment (decoding releases the GIL but allocates rarely).
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; False where there is no glibc (nothing to do).

    Arenas made before the call stay; call it before the run starts its threads.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)  # absent in musl
    return bool(mallopt is not None and mallopt(_M_ARENA_MAX, arenas) == 1)
