"""Tests of the ``raddino`` command line (raddino_lib.cli)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from raddino_lib.cli import main, parse_value

REPO = Path(__file__).resolve().parents[1]

CHAPTER_OK = """\
# %% tags=["parameters"]
preset = "smoke"

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "ok")

# %%
import json as _json
from pathlib import Path as _Path

_Path("out_ok.json").write_text(_json.dumps(cfg.to_dict()))
"""

CHAPTER_BAD = """\
# %% tags=["parameters"]
preset = "smoke"

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "bad")

# %%
raise RuntimeError("boom from the bad chapter")
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A temporary project with chapters ``ok`` and ``bad`` (bad listed first in the toc)."""
    r = tmp_path / "proj"
    (r / "chapters").mkdir(parents=True)
    (r / "book").mkdir()
    shutil.copy2(REPO / "_config.yml", r / "_config.yml")
    for src in (REPO / "book").glob("*.bib"):
        shutil.copy2(src, r / "book" / src.name)
    (r / "book" / "intro.md").write_text("# Intro\n\nA test book.\n")
    (r / "pyproject.toml").write_text("[project]\nname = 'tmp'\n")
    (r / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: Chapters\n    chapters:\n"
        "      - file: chapters/bad\n      - file: chapters/ok\n"
    )
    (r / "chapters" / "ok.py").write_text(CHAPTER_OK)
    (r / "chapters" / "bad.py").write_text(CHAPTER_BAD)
    return r


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        ("True", True),
        ("False", False),
        ("None", None),
        ("true", "true"),
        ("cuda", "cuda"),
        ("/data/x", "/data/x"),
        ("[0, 1]", [0, 1]),
        ('["RAD-DINO=/m/rad-dino", "CLIP=/m/clip"]', ["RAD-DINO=/m/rad-dino", "CLIP=/m/clip"]),
    ],
)
def test_parse_value_like_papermill(text: str, value: object) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_list_values_reach_the_config() -> None:
    from raddino_lib.config import make_config

    cfg = make_config("smoke", seeds=parse_value("[0, 1]"))
    assert cfg.seeds == (0, 1)
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_value("[0, 1")


def test_chapter_ok_with_params(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["chapter", "ok", "--root", str(root), "--no-progress"]
    code = main([*argv, "-p", "preset", "smoke", "-p", "seed", "7", "-y", "{phantom_n: 12}"])
    assert code == 0, capsys.readouterr().err
    written = json.loads((root / "out_ok.json").read_text())
    assert (written["preset"], written["seed"], written["phantom_n"]) == ("smoke", 7, 12)
    assert (root / "book" / "_executed" / "smoke" / "ok.ipynb").is_file()
    assert "executed notebook" in capsys.readouterr().out


def test_chapter_unknown_param_exits_2_with_valid_names(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chapter", "ok", "--root", str(root), "-p", "bogus_knob", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "bogus_knob" in err and "Valid names" in err and "phantom_n" in err
    assert not (root / "out_ok.json").exists()


def test_chapter_bad_yaml_exits_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chapter", "ok", "--root", str(root), "-y", "[1, 2]"]) == 2
    assert "YAML mapping" in capsys.readouterr().err


def test_chapter_conflicting_presets_exit_2(root: Path) -> None:
    argv = ["chapter", "ok", "--root", str(root), "--preset", "laptop", "-p", "preset", "smoke"]
    assert main(argv) == 2


def test_unknown_chapter_exits_2(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["chapter", "nope", "--root", str(root)]) == 2
    assert "Available chapters" in capsys.readouterr().err


def test_failing_chapter_exits_1_naming_the_cell(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["chapter", "bad", "--root", str(root), "--preset", "smoke", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "'bad'" in err and "RuntimeError" in err and "boom from the bad chapter" in err
    assert "In [" in err


def test_book_with_failing_chapter_exits_nonzero(root: Path) -> None:
    code = main(["book", "--root", str(root), "--preset", "smoke", "--no-progress"])
    assert code == 1
    assert not (root / "out_ok.json").exists()


def test_book_unknown_preset_exits_2(root: Path) -> None:
    assert main(["book", "--root", str(root), "--preset", "enormous"]) == 2


def test_phantom_value_error_exits_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple] = []

    def fake_generate(out_dir, n, *, size, seed, overwrite, workers, progress):
        calls.append((out_dir, n, size, seed, overwrite, workers, progress))
        if n < 1:
            raise ValueError("n must be at least 1")
        return out_dir

    fake = types.ModuleType("raddino_lib.data.phantom")
    fake.generate_dataset = fake_generate  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "raddino_lib.data.phantom", fake)
    out = tmp_path / "ph"
    base = ["phantom", "--out", str(out), "--size", "32", "--seed", "5"]
    assert main([*base, "--n", "0"]) == 2
    assert "n must be at least 1" in capsys.readouterr().err
    assert main([*base, "--n", "4", "--workers", "2", "--overwrite"]) == 0
    assert calls[-1] == (out, 4, 32, 5, True, 2, True)


def test_usage_errors_and_help() -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
    assert main(["chapter"]) == 2


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "raddino_lib.cli", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    for sub in ("chapter", "book", "phantom"):
        assert sub in proc.stdout
