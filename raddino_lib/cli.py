"""The ``raddino`` command line.

Subcommands::

    raddino chapter NAME [--preset P] [-p key value ...] [-y YAML] [-f FILE]
    raddino book [--preset P] [--no-run] [--chapters A B ...]
    raddino phantom --out DIR --n N --size S --seed K [--overwrite] [--workers W]

Exit codes: 0 success, 1 a chapter / build / run failed, 2 bad arguments or parameters.

To add a subcommand, write ``_add_NAME(subparsers)`` that registers its parser with
``set_defaults(func=_cmd_NAME)`` and list it in :data:`_SUBCOMMANDS`. ``_cmd_NAME(args)``
returns the exit code; import heavy modules inside it so ``raddino --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def parse_value(text: str) -> Any:
    """Parse a ``-p`` value the way papermill does: bool, None, int, float, else the string."""
    if text == "True":
        return True
    if text == "False":
        return False
    if text == "None":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _collect_params(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``-f FILE``, ``-y YAML`` and ``-p key value`` (later wins) into one dict."""
    import yaml

    params: dict[str, Any] = {}
    for label, text in (
        ("-f", Path(args.param_file).read_text(encoding="utf-8") if args.param_file else None),
        ("-y", args.yaml),
    ):
        if text is None:
            continue
        loaded = yaml.safe_load(text)
        if loaded is None:
            continue
        if not isinstance(loaded, dict):
            raise ValueError(f"{label} must give a YAML mapping (key: value), got {loaded!r}")
        params.update(loaded)
    for key, value in args.params or []:
        params[key] = parse_value(value)
    return params


def _print_err(msg: str) -> None:
    print(f"raddino: error: {msg}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# chapter


def _add_chapter(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chapter",
        help="execute one chapter with papermill",
        description=(
            "Execute chapters/NAME.py with papermill at a preset, with optional parameter "
            "overrides; the executed notebook goes to book/_executed/<preset>/NAME.ipynb and "
            "the chapter's numbers to results/<preset>/NAME.json."
        ),
    )
    p.add_argument("name", help="chapter name, e.g. 01_data")
    p.add_argument("--preset", default=None, help="smoke | laptop | paper (default laptop)")
    p.add_argument(
        "-p",
        "--param",
        dest="params",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="override a parameter (values parse as True/False/None/int/float, else string)",
    )
    p.add_argument("-y", "--yaml", default=None, help="parameters as a YAML mapping string")
    p.add_argument("-f", "--param-file", default=None, help="parameters from a YAML file")
    p.add_argument("--root", default=None, help="project root (default: found automatically)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--log-output", action="store_true", help="stream cell output while running")
    p.set_defaults(func=_cmd_chapter)


def _cmd_chapter(args: argparse.Namespace) -> int:
    from raddino_lib.config import DEFAULT_PRESET, ParameterError
    from raddino_lib.runner import ChapterFailed, run_chapter

    try:
        params = _collect_params(args)
    except (OSError, ValueError) as exc:
        _print_err(str(exc))
        return 2
    preset = args.preset or DEFAULT_PRESET
    if args.preset and "preset" in params and params["preset"] != args.preset:
        _print_err(f"--preset {args.preset} contradicts -p preset {params['preset']}")
        return 2
    try:
        out = run_chapter(
            args.name,
            preset,
            params,
            root=args.root,
            progress=not args.no_progress,
            log_output=args.log_output,
        )
    except ParameterError as exc:
        _print_err(str(exc))
        return 2
    except FileNotFoundError as exc:
        _print_err(str(exc))
        return 2
    except ChapterFailed as exc:
        _print_err(str(exc))
        return 1
    print(f"executed notebook: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# book


def _add_book(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "book",
        help="run every chapter, then build the static HTML book",
        description=(
            "Run every chapter in _toc.yml at a preset (stopping at the first failure), then "
            "build the HTML with Jupyter Book into book/_build/html."
        ),
    )
    p.add_argument("--preset", default="laptop", help="smoke | laptop | paper (default laptop)")
    p.add_argument(
        "--no-run",
        action="store_true",
        help="do not execute chapters; use the notebooks already in book/_executed/<preset>",
    )
    p.add_argument("--chapters", nargs="+", default=None, help="only these chapters")
    p.add_argument("--root", default=None, help="project root (default: found automatically)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_cmd_book)


def _cmd_book(args: argparse.Namespace) -> int:
    from raddino_lib.config import ParameterError
    from raddino_lib.runner import BookBuildFailed, ChapterFailed, build_book

    try:
        html = build_book(
            args.preset,
            root=args.root,
            chapters=args.chapters,
            run=not args.no_run,
            progress=not args.no_progress,
        )
    except (ParameterError, FileNotFoundError) as exc:
        _print_err(str(exc))
        return 2
    except (ChapterFailed, BookBuildFailed) as exc:
        _print_err(str(exc))
        return 1
    print(f"book built: {html / 'index.html'}")
    return 0


# --------------------------------------------------------------------------------------------
# phantom


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="generate a synthetic chest radiograph dataset",
        description="Write N phantom radiographs with reports and labels to DIR.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, required=True, help="number of images")
    p.add_argument("--size", type=int, required=True, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(func=_cmd_phantom)


def _cmd_phantom(args: argparse.Namespace) -> int:
    from raddino_lib.data.phantom import generate_dataset

    try:
        out = generate_dataset(
            Path(args.out),
            args.n,
            size=args.size,
            seed=args.seed,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=True,
        )
    except ValueError as exc:
        _print_err(str(exc))
        return 2
    if out is not None:
        print(f"dataset: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# entry point

# Later: _add_pretrain, _add_export, _add_embed.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_chapter,
    _add_book,
    _add_phantom,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="raddino",
        description="RAD-DINO, run for real: run chapters, build the book, make data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``raddino`` command line; return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _print_err("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
