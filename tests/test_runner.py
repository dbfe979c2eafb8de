"""Tests of raddino_lib.runner: papermill chapter runs and the Jupyter Book build.

Each test writes tiny Jupytext chapters into a temporary project root, so nothing here depends
on the real chapters (tests/test_cli.py runs the real chapters/01_data.py at the smoke preset).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import nbformat
import pytest

from raddino_lib.config import ParameterError
from raddino_lib.runner import (
    BookBuildFailed,
    ChapterFailed,
    build_book,
    chapter_names,
    run_chapter,
)

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
# %% tags=["parameters"]
preset = "smoke"

# %%
import raddino_lib.config as _rc

cfg = _rc.chapter_config(globals(), "{name}")
"""

PASSING = """\
# %% [markdown]
# # A passing chapter

# %%
import json as _json
from pathlib import Path as _Path

_Path("out_{name}.json").write_text(_json.dumps(cfg.to_dict()))
print("chapter ran with seed", cfg.seed)
"""

FAILING = """\
# %%
x = 1

# %%
y = 1 / 0
"""


def write_chapter(root: Path, name: str, body: str) -> Path:
    """Write ``chapters/NAME.py`` (parameters cell + chapter_config cell + ``body``)."""
    path = root / "chapters" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER.format(name=name) + "\n" + body.format(name=name), encoding="utf-8")
    return path


def write_project(root: Path, chapters: dict[str, str]) -> Path:
    """A minimal book project: the real _config.yml and book pages, these chapters in the toc."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "_config.yml", root / "_config.yml")
    (root / "pyproject.toml").write_text("[project]\nname = 'tmp'\n", encoding="utf-8")
    (root / "book").mkdir(exist_ok=True)
    for src in (REPO / "book").glob("*"):
        if src.is_file() and src.suffix in {".md", ".bib"}:
            shutil.copy2(src, root / "book" / src.name)
    # The vendored MathJax / widget JS that _config.yml points at (html_extra_path).
    shutil.copytree(REPO / "book" / "vendor", root / "book" / "vendor", dirs_exist_ok=True)
    pages = sorted(p.stem for p in (root / "book").glob("*.md") if p.stem != "intro")
    toc = ["format: jb-book", "root: book/intro", "parts:"]
    if pages:
        toc += ["  - caption: Reading", "    chapters:"]
        toc += [f"      - file: book/{p}" for p in pages]
    toc += ["  - caption: Chapters", "    chapters:"]
    toc += [f"      - file: chapters/{n}" for n in chapters]
    (root / "_toc.yml").write_text("\n".join(toc) + "\n", encoding="utf-8")
    for name, body in chapters.items():
        write_chapter(root, name, body)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"ok": PASSING, "bad": FAILING})


def test_chapter_names_follow_the_toc(tmp_path: Path) -> None:
    (tmp_path / "_toc.yml").write_text(
        textwrap.dedent(
            """\
            format: jb-book
            root: book/intro
            parts:
              - caption: A
                chapters:
                  - file: book/how_to_read
                  - file: chapters/02_b
                    sections:
                      - file: chapters/01_a
              - caption: B
                chapters:
                  - file: chapters/03_c.ipynb
            """
        )
    )
    assert chapter_names(tmp_path) == ["02_b", "01_a", "03_c"]


def test_real_toc_lists_the_first_chapter() -> None:
    assert chapter_names(REPO)[0] == "01_data"


def test_run_chapter_writes_executed_notebook(project: Path) -> None:
    out = run_chapter("ok", "smoke", {"seed": 3}, root=project, progress=False)
    assert out == project / "book" / "_executed" / "smoke" / "ok.ipynb"
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert ["injected-parameters"] in tags
    written = json.loads((project / "out_ok.json").read_text())  # cwd of the kernel is root
    assert written["preset"] == "smoke"
    assert written["seed"] == 3
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "chapter ran with seed 3" in outputs
    # no temporary files are left beside the result
    assert sorted(p.name for p in out.parent.iterdir()) == ["ok.ipynb"]


def test_preset_in_params_wins(project: Path) -> None:
    out = run_chapter("ok", "laptop", {"preset": "smoke"}, root=project, progress=False)
    assert out.parent.name == "smoke"


def test_failing_chapter_names_chapter_cell_and_exception(project: Path) -> None:
    with pytest.raises(ChapterFailed) as info:
        run_chapter("bad", "smoke", root=project, progress=False)
    err = info.value
    msg = str(err)
    assert "'bad'" in msg and "ZeroDivisionError" in msg and "y = 1 / 0" in msg
    assert "In [" in msg
    assert err.chapter == "bad" and err.ename == "ZeroDivisionError"
    assert err.cell is not None and err.cell_index is not None
    executed = project / "book" / "_executed" / "smoke"
    assert not (executed / "bad.ipynb").exists()
    assert err.notebook == executed / "bad.failed.ipynb" and err.notebook.is_file()


def test_unknown_parameter_is_refused_before_running(project: Path) -> None:
    with pytest.raises(ParameterError) as info:
        run_chapter("ok", "smoke", {"not_a_knob": 1}, root=project, progress=False)
    msg = str(info.value)
    assert "not_a_knob" in msg and "phantom_n" in msg and "seed" in msg
    assert not (project / "book" / "_executed").exists()


@pytest.mark.parametrize(
    "params",
    [{"seed": "three"}, {"preset": "huge"}],
    ids=["wrong-type", "unknown-preset"],
)
def test_bad_parameter_values_are_refused(project: Path, params: dict) -> None:
    with pytest.raises(ParameterError):
        run_chapter("ok", "smoke", params, root=project, progress=False)


def test_missing_chapter_lists_available(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Available chapters: bad, ok"):
        run_chapter("nope", "smoke", root=project, progress=False)


def test_chapter_without_parameters_cell_is_refused(project: Path) -> None:
    (project / "chapters" / "noparams.py").write_text("# %%\nx = 1\n")
    with pytest.raises(ParameterError, match="parameters"):
        run_chapter("noparams", "smoke", root=project, progress=False)


def test_build_book_fails_fast_on_a_failing_chapter(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"bad": FAILING, "ok": PASSING})
    with pytest.raises(ChapterFailed, match="'bad'"):
        build_book("smoke", root=root, progress=False)
    assert not (root / "out_ok.json").exists()  # the chapter after the failure never ran
    assert not (root / "book" / "_build").exists()


def test_build_book_without_run_needs_executed_notebooks(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"ok": PASSING})
    with pytest.raises(FileNotFoundError, match="run the chapter first"):
        build_book("smoke", root=root, run=False)


def test_build_book_makes_offline_html(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"ok": PASSING})
    html = build_book("smoke", root=root, progress=False)
    assert html == root / "book" / "_build" / "html"
    page = (html / "chapters" / "ok.html").read_text(encoding="utf-8")
    assert "chapter ran with seed 0" in page
    assert (html / "index.html").is_file()
    assert (html / "book" / "how_to_read.html").is_file()
    staged = root / "book" / "_site_src"
    assert (staged / "chapters" / "ok.ipynb").is_file()
    assert not (staged / "chapters" / "ok.py").exists()
    # No page of this book loads a script from the network (MathJax only loads on pages with
    # math; widget JS only on pages with widget state).
    for path in [html / "index.html", html / "chapters" / "ok.html"]:
        text = path.read_text(encoding="utf-8")
        assert '<script src="http' not in text and "<script src='http" not in text, path
    # The vendored assets are copied beside the pages (html_extra_path), not into _static.
    assert (html / "vendor" / "widgets-config.js").is_file()
    assert not (html / "_static" / "widgets-config.js").exists()


def test_build_book_reports_sphinx_warnings(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"ok": PASSING})
    intro = root / "book" / "intro.md"
    intro.write_text(intro.read_text() + "\nSee {doc}`does_not_exist`.\n")
    with pytest.raises(BookBuildFailed, match="does_not_exist"):
        build_book("smoke", root=root, progress=False)
