"""Atomic writes: a reader sees the old content or the new, never a half-written one."""

from __future__ import annotations

from pathlib import Path

import pytest

from raddino_lib.atomic import atomic_dir, atomic_write_text


def test_atomic_write_text_replaces_or_keeps(tmp_path: Path) -> None:
    path = tmp_path / "a" / "x.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["x.txt"]


def test_atomic_dir_replaces_a_folder_only_when_filled(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    with atomic_dir(folder) as tmp:
        assert tmp.parent == tmp_path and tmp != folder
        (tmp / "a.txt").write_text("1")
        assert not folder.exists()  # nothing visible until the block ends
    assert (folder / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(folder) as tmp:
        (tmp / "b.txt").write_text("2")
        raise RuntimeError("boom")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]  # the old folder, untouched
    with atomic_dir(folder) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(p.name for p in folder.iterdir()) == ["c.txt"]  # replaced, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left
