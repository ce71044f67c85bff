"""release_free_memory: glibc's malloc_trim where there is one."""

from __future__ import annotations

import platform

from rulebot.daemon.heap import release_free_memory


def test_free_memory_is_given_back_on_glibc_and_nothing_breaks_elsewhere() -> None:
    glibc = platform.libc_ver()[0] == "glibc"
    assert release_free_memory() is glibc
    assert release_free_memory() is glibc  # looked up once, callable again
