"""Run the book: execute chapters with papermill and build the static HTML with Jupyter Book 1.

A chapter is a Jupytext percent file ``chapters/NAME.py`` whose first code cell is tagged
``parameters``. :func:`run_chapter` converts it to a notebook in memory, validates the
parameters against :mod:`raddino_lib.config`, executes it with papermill and writes the executed
notebook to ``book/_executed/<preset>/NAME.ipynb``. The chapter itself writes
``results/<preset>/NAME.json`` through :mod:`raddino_lib.results`.

:func:`build_book` runs every chapter listed in ``_toc.yml`` (fail fast), copies the book
sources and the executed notebooks into a clean staging folder ``book/_site_src`` (the same
layout as the repository: ``_config.yml``, ``_toc.yml``, ``book/*.md``, ``chapters/NAME.ipynb``)
and builds it with ``jupyter-book build ... --path-output book -W -n --keep-going``, so the HTML
lands in ``book/_build/html`` and any Sphinx warning fails the build. Notebooks are never
executed by Jupyter Book (``execute_notebooks: "off"``): papermill already did, and papermill
fails loudly where Jupyter Book would only warn.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from raddino_lib.atomic import atomic_path, atomic_write_text
from raddino_lib.config import DEFAULT_PRESET, ParameterError, validate_overrides
from raddino_lib.environ import temporary_env

__all__ = [
    "BookBuildFailed",
    "ChapterFailed",
    "ParameterError",
    "build_book",
    "chapter_names",
    "executed_dir",
    "html_dir",
    "run_chapter",
]

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# Folders under book/ that are build products, never book sources.
_BOOK_BUILD_DIRS = frozenset({"_build", "_site_src", "_executed"})

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ChapterFailed(RuntimeError):
    """A chapter raised an exception (or its kernel died) while papermill executed it.

    Attributes:
        chapter: the chapter name (``01_data``).
        cell: the execution count of the failing cell (``In [n]``) or ``None``.
        cell_index: index of the failing cell in the executed notebook, or ``None``.
        ename / evalue: the exception's class name and message inside the kernel.
        notebook: the partially executed notebook, kept for inspection.
    """

    def __init__(
        self,
        message: str,
        *,
        chapter: str,
        cell: int | None = None,
        cell_index: int | None = None,
        ename: str | None = None,
        evalue: str | None = None,
        notebook: Path | None = None,
    ) -> None:
        super().__init__(message)
        self.chapter = chapter
        self.cell = cell
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.notebook = notebook


class BookBuildFailed(RuntimeError):
    """``jupyter-book build`` exited non-zero (a Sphinx warning with ``-W`` counts)."""

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.log = log


# --------------------------------------------------------------------------------------------
# Locations


def _root(root: str | Path | None) -> Path:
    if root is not None:
        return Path(root).resolve()
    from raddino_lib.paths import project_root

    return project_root()


def executed_dir(preset: str, *, root: str | Path | None = None) -> Path:
    """``<root>/book/_executed/<preset>``: where executed chapter notebooks are written."""
    return _root(root) / "book" / "_executed" / preset


def html_dir(*, root: str | Path | None = None) -> Path:
    """``<root>/book/_build/html``: where :func:`build_book` puts the static site."""
    return _root(root) / "book" / "_build" / "html"


def _toc_files(node: Any) -> Iterator[str]:
    """Every ``file:`` entry of a (nested) ``_toc.yml`` structure, in order."""
    if isinstance(node, Mapping):
        for key in ("root", "file"):
            if isinstance(node.get(key), str):
                yield node[key]
        for value in node.values():
            if isinstance(value, list | Mapping):
                yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def chapter_names(root: str | Path | None = None) -> list[str]:
    """Names of the chapters listed in ``<root>/_toc.yml`` (entries ``chapters/NAME``), in order."""
    root = _root(root)
    toc_path = root / "_toc.yml"
    if not toc_path.is_file():
        raise FileNotFoundError(f"no _toc.yml in {root}: is this the project root?")
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8")) or {}
    names: list[str] = []
    for entry in _toc_files(toc):
        entry = entry.strip().removesuffix(".ipynb").removesuffix(".py").removesuffix(".md")
        parts = Path(entry).parts
        if len(parts) == 2 and parts[0] == "chapters" and parts[1] not in names:
            names.append(parts[1])
    return names


# --------------------------------------------------------------------------------------------
# One chapter


def resolve_chapter(root: Path, name: str) -> str:
    """A chapter's file stem from its full name (``03_classification``) or its name without
    the number (``classification``, when exactly one chapter has it).

    Raises:
        FileNotFoundError: no such chapter (the message lists the chapters).
    """
    available = sorted(p.stem for p in (root / "chapters").glob("*.py"))
    if name in available:
        return name
    short = [a for a in available if a.partition("_")[2] == name]
    if len(short) == 1:
        return short[0]
    raise FileNotFoundError(
        f"no chapter {name!r}: {root / 'chapters' / (name + '.py')} does not exist. "
        f"Available chapters: {', '.join(available) or '(none)'}"
    )


def _chapter_source(root: Path, name: str) -> Path:
    return root / "chapters" / f"{resolve_chapter(root, name)}.py"


def load_chapter_notebook(src: str | Path) -> Any:
    """Read a Jupytext percent chapter as a notebook with the ``python3`` kernelspec set."""
    import jupytext

    nb = jupytext.read(Path(src), fmt="py:percent")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    # The pairing information is about the source file, not about this in-memory copy.
    nb.metadata.get("jupytext", {}).pop("formats", None)
    has_params = any(
        "parameters" in cell.get("metadata", {}).get("tags", [])
        for cell in nb.cells
        if cell.cell_type == "code"
    )
    if not has_params:
        raise ParameterError(
            f"{src}: no cell tagged 'parameters'. Start the chapter with "
            '`# %% tags=["parameters"]` followed by `preset = "laptop"`.'
        )
    return nb


def _jsonable(value: Any) -> Any:
    """Parameters as papermill can write them (tuples become lists)."""
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _failure_message(name: str, exc: Exception, kept: Path | None) -> tuple[str, dict[str, Any]]:
    from papermill.exceptions import PapermillExecutionError

    where = f"\nThe partially executed notebook is {kept}" if kept else ""
    if isinstance(exc, PapermillExecutionError):
        tb = _ANSI.sub("", "\n".join(exc.traceback or []))
        tail = "\n".join(tb.strip().splitlines()[-25:])
        source = (exc.source or "").strip()
        if len(source) > 1500:
            source = source[:1500] + "\n..."
        msg = (
            f"chapter {name!r} failed in cell In [{exc.exec_count}] "
            f"(cell #{exc.cell_index} of the notebook): {exc.ename}: {exc.evalue}\n"
            f"--- cell source ---\n{source}\n--- traceback (last lines) ---\n{tail}{where}"
        )
        info = {
            "cell": exc.exec_count,
            "cell_index": exc.cell_index,
            "ename": exc.ename,
            "evalue": exc.evalue,
        }
        return msg, info
    msg = (
        f"chapter {name!r} could not be executed: {type(exc).__name__}: {exc}{where}\n"
        "If the kernel died, the machine may have run out of memory: try a smaller preset "
        "(--preset smoke) or lower batch_size."
    )
    return msg, {"ename": type(exc).__name__, "evalue": str(exc)}


def run_chapter(
    name: str,
    preset: str = DEFAULT_PRESET,
    params: Mapping[str, Any] | None = None,
    *,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    log_output: bool = False,
) -> Path:
    """Execute ``chapters/NAME.py`` with papermill and return the executed notebook's path.

    Args:
        name: chapter name, e.g. ``"01_data"`` (the file ``chapters/01_data.py``).
        preset: ``smoke`` | ``laptop`` | ``paper``. A ``"preset"`` key in ``params`` wins.
        params: parameter overrides (names of :class:`raddino_lib.config.Config` fields). They
            are validated before anything runs.
        root: project root (default :func:`raddino_lib.paths.project_root`). The kernel runs
            with this folder as working directory and as ``RADDINO_ROOT``.
        out_dir: folder for the executed notebook (default ``book/_executed/<preset>``).
        progress: show papermill's cell progress bar.
        log_output: stream the cells' output to the log while they run.

    Raises:
        ParameterError: an unknown parameter name (the message lists the valid names), an
            unknown preset or a wrongly typed value.
        FileNotFoundError: no such chapter.
        ChapterFailed: the chapter raised; the message names the chapter, the cell and the
            exception. The partial notebook is kept as ``NAME.failed.ipynb`` beside the output.
    """
    import papermill

    root = _root(root)
    params = dict(params or {})
    preset = params.pop("preset", None) or preset
    validate_overrides({"preset": preset, **params})
    name = resolve_chapter(root, name)
    src = _chapter_source(root, name)
    nb = load_chapter_notebook(src)

    out_dir = Path(out_dir) if out_dir is not None else executed_dir(preset, root=root)
    out_path = out_dir / f"{name}.ipynb"
    failed_path = out_dir / f"{name}.failed.ipynb"
    parameters = {"preset": preset, **{k: _jsonable(v) for k, v in params.items()}}

    t0 = time.perf_counter()
    with atomic_path(out_path, suffix=".ipynb") as tmp, PeakMemory() as mem:
        try:
            with temporary_env(RADDINO_ROOT=str(root)):
                papermill.execute_notebook(
                    nb,
                    str(tmp),
                    parameters=parameters,
                    kernel_name=KERNELSPEC["name"],
                    language="python",
                    progress_bar=progress,
                    log_output=log_output,
                    cwd=str(root),
                )
        except Exception as exc:
            kept: Path | None = None
            if tmp.is_file() and tmp.stat().st_size > 0:
                shutil.copyfile(tmp, failed_path)
                kept = failed_path
            msg, info = _failure_message(name, exc, kept)
            raise ChapterFailed(msg, chapter=name, notebook=kept, **info) from exc
    failed_path.unlink(missing_ok=True)
    record_timing(root, preset, name, time.perf_counter() - t0, mem.peak_mb)
    return out_path


class PeakMemory:
    """Peak resident memory (MB) of this process and all its children (the chapter's kernel),
    sampled every ``interval`` seconds by a background thread while the block runs."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while True:
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_mb = max(self.peak_mb, total / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def record_timing(root: Path, preset: str, chapter: str, seconds: float, peak_mb: float) -> Path:
    """Merge one chapter's wall time and peak memory into ``results/<preset>/_timings.json``
    (the book benchmark reads it), in the table of contents' order."""
    path = root / "results" / preset / "_timings.json"
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError:
        data = {}
    data[chapter] = {"seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1)}
    try:
        order = {n: i for i, n in enumerate(chapter_names(root))}
    except FileNotFoundError:
        order = {}
    data = dict(sorted(data.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")
    return path


# --------------------------------------------------------------------------------------------
# The book


def _jupyter_book_cmd() -> list[str]:
    """The ``jupyter-book`` executable of this environment (next to ``sys.executable``)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    raise FileNotFoundError(
        "jupyter-book is not installed in this environment: run `make setup` "
        "(it installs the pinned jupyter-book<2 into .venv)."
    )


def stage_book(preset: str, chapters: list[str], *, root: str | Path | None = None) -> Path:
    """Copy the book sources and the executed notebooks into a fresh ``book/_site_src``."""
    root = _root(root)
    site = root / "book" / "_site_src"
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    for fname in ("_config.yml", "_toc.yml"):
        if not (root / fname).is_file():
            raise FileNotFoundError(f"{root / fname} is missing: the book needs it")
        shutil.copy2(root / fname, site / fname)
    book_src = root / "book"
    if book_src.is_dir():
        for item in book_src.iterdir():
            if item.name in _BOOK_BUILD_DIRS or item.name.startswith("."):
                continue
            dest = site / "book" / item.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            if item.is_dir():
                shutil.copytree(item, dest, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(item, dest)
    exe_dir = executed_dir(preset, root=root)
    (site / "chapters").mkdir()
    for name in chapters:
        nb = exe_dir / f"{name}.ipynb"
        if not nb.is_file():
            raise FileNotFoundError(
                f"{nb} is missing: run the chapter first (`raddino chapter {name} --preset "
                f"{preset}`) or build without --no-run"
            )
        shutil.copy2(nb, site / "chapters" / f"{name}.ipynb")
    return site


def build_book(
    preset: str = DEFAULT_PRESET,
    *,
    root: str | Path | None = None,
    chapters: list[str] | None = None,
    run: bool = True,
    progress: bool = True,
    strict: bool = True,
) -> Path:
    """Run every chapter, then build the static HTML book; return ``book/_build/html``.

    Args:
        preset: the preset every chapter runs at.
        root: project root (default :func:`raddino_lib.paths.project_root`).
        chapters: chapter names (default: all chapters in ``_toc.yml``, in order).
        run: execute the chapters first. With ``run=False`` the notebooks already in
            ``book/_executed/<preset>`` are used.
        progress: papermill progress bars.
        strict: build with ``-W -n --keep-going`` (every Sphinx warning fails the build).

    Raises:
        ParameterError: unknown preset.
        ChapterFailed: a chapter failed (the first one; later chapters are not run).
        BookBuildFailed: ``jupyter-book build`` failed; the message quotes the warnings/errors
            and names the full log.
    """
    root = _root(root)
    validate_overrides({"preset": preset})
    names = list(chapters) if chapters is not None else chapter_names(root)
    if run:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] running chapter {name} (preset {preset})", flush=True)
            run_chapter(name, preset, root=root, progress=progress)
    site = stage_book(preset, names, root=root)

    out_base = root / "book"
    shutil.rmtree(out_base / "_build", ignore_errors=True)
    cmd = [*_jupyter_book_cmd(), "build", str(site), "--path-output", str(out_base)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    print(f"building the book: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(
        cmd, cwd=root, capture_output=True, text=True, check=False, env={**os.environ}
    )
    log = out_base / "_build" / "jupyter-book.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr, encoding="utf-8")
    html = out_base / "_build" / "html"
    if proc.returncode != 0 or not (html / "index.html").is_file():
        text = _ANSI.sub("", proc.stdout + "\n" + proc.stderr)
        problems = [
            line
            for line in text.splitlines()
            if re.search(r"WARNING|ERROR|Error|Exception|Traceback", line)
        ]
        excerpt = "\n".join(problems[-30:]) or "\n".join(text.strip().splitlines()[-30:])
        raise BookBuildFailed(
            f"jupyter-book build failed (exit {proc.returncode}); warnings count as errors "
            f"(-W).\n{excerpt}\nFull log: {log}",
            log=log,
        )
    return html
