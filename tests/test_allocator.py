"""raddino_lib.allocator: large activations reused instead of page-faulted anew."""

from __future__ import annotations

import ctypes

import pytest
import torch

from raddino_lib import allocator
from raddino_lib.allocator import glibc, reuse_freed_memory

_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
           "fordblks", "keepcost")  # fmt: skip


class _MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in _FIELDS]


def _mallinfo() -> _MallInfo2:
    fn = glibc().mallinfo2
    fn.restype = _MallInfo2
    return fn()


needs_glibc = pytest.mark.skipif(
    glibc() is None or not hasattr(glibc(), "mallinfo2"), reason="needs glibc >= 2.33"
)
BIG = 48 << 20  # above glibc's largest mmap threshold (32 MiB)


@needs_glibc
def test_a_large_tensor_comes_from_the_heap_and_stays_there_inside():
    # outside: mmapped on allocation, unmapped on free (page-faulted anew the next time)
    mapped = _mallinfo().hblkhd
    t = torch.empty(BIG, dtype=torch.uint8)
    assert _mallinfo().hblkhd >= mapped + BIG
    del t
    assert _mallinfo().hblkhd < mapped + BIG
    with reuse_freed_memory() as on:
        assert on
        mapped = _mallinfo().hblkhd
        t = torch.empty(BIG, dtype=torch.uint8).fill_(1)
        assert _mallinfo().hblkhd < mapped + BIG  # from the heap, not a fresh mapping
        del t
        assert _mallinfo().fordblks >= BIG  # freed, kept in the process for the next one
        with reuse_freed_memory():  # nested: the inner exit leaves the outer setting
            pass
        t = torch.empty(BIG, dtype=torch.uint8)
        assert _mallinfo().hblkhd < mapped + BIG
        del t
    assert allocator._depth == 0
    mapped = _mallinfo().hblkhd
    t = torch.empty(BIG, dtype=torch.uint8)  # glibc's defaults again: above 32 MiB, mmap
    assert _mallinfo().hblkhd >= mapped + BIG
    del t


def test_off_glibc_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(allocator, "glibc", lambda: None)
    with reuse_freed_memory() as on:
        assert on is False
    assert allocator._depth == 0
