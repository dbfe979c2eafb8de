"""The ``raddino`` command line.

Subcommands::

    raddino chapter NAME [--preset P] [-p key value ...] [-y YAML] [-f FILE]
    raddino book [--preset P] [--no-run] [--chapters A B ...]
    raddino phantom --out DIR --n N --size S --seed K [--overwrite] [--workers W]
    raddino dataset NAME=FOLDER [NAME=FOLDER ...] --out DIR [--skip-bad] [--all-splits N ...]
    raddino pretrain --preset P [--data DIR] --out RUN [--init random|PATH] [--no-mim]
                     [--resolution R] [--max-images N] [--cohorts C ...] [-p key value ...]
    raddino export RUN --out DIR [--student] [--overwrite]

``pretrain`` also runs under ``torchrun --nproc_per_node=K -m raddino_lib.cli pretrain ...``
(DistributedDataParallel; gloo on CPU, NCCL on GPU; only rank 0 writes). Multi-node: add
torchrun's own rendezvous options (``--nnodes``, ``--node_rank``, ``--rdzv_backend c10d``,
``--rdzv_endpoint HOST:PORT``) on every node; nothing else changes.

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
    """Parse a ``-p`` value the way papermill does: bool, None, int, float, else the string;
    a value written as a list (``"[0, 1]"``, ``'["a=/x", "b=/y"]'``) parses as YAML."""
    if text.lstrip().startswith("["):
        import yaml

        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            msg = f"-p value {text!r} looks like a list but is not valid YAML: {exc}"
            raise ValueError(msg) from None
        if isinstance(loaded, list):
            return loaded
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


def _add_param_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-p",
        "--param",
        dest="params",
        nargs=2,
        action="append",
        metavar=("NAME", "VALUE"),
        help="override a config field (values parse as True/False/None/int/float, else string)",
    )


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
    _add_param_option(p)
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
# dataset


def _add_dataset(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="read real datasets with their adapters into one records folder",
        description=(
            "Run each dataset's adapter (vindr_cxr, rsna_pneumonia, candid_ptx, chexpert, "
            "mimic_cxr, nih_cxr14, padchest, vindr_ribcxr, or an alias: vindr, mimic, nih...) on "
            "its own folder and write OUT/records.csv in the generic format; with several, a "
            "pretraining mixture (ids prefixed by the dataset, parts under OUT/parts/). "
            "Images stay where they are. MIMIC-CXR reads MIMIC-IV from FOLDER/mimic-iv when "
            "it exists."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="NAME=FOLDER", help="dataset name and folder")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="skip missing / unreadable images")
    p.add_argument(
        "--all-splits",
        nargs="*",
        default=(),
        metavar="NAME",
        help="datasets whose every image is marked train (the paper: all but mimic_cxr)",
    )
    p.set_defaults(func=_cmd_dataset)


def _cmd_dataset(args: argparse.Namespace) -> int:
    from raddino_lib.data.adapters import AdapterError
    from raddino_lib.data.mixture import write_mixture

    pairs = []
    for item in args.sources:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            _print_err(f"{item!r}: expected NAME=FOLDER")
            return 2
        pairs.append((name, folder))
    try:
        df = write_mixture(
            args.out, pairs, seed=args.seed, skip_bad=args.skip_bad, all_splits=args.all_splits
        )
    except (AdapterError, KeyError, ValueError, FileNotFoundError) as exc:
        _print_err(str(exc).strip("'\""))
        return 2
    counts = df.groupby(["cohort", "split"]).size().unstack(fill_value=0)
    print(counts.to_string())
    print(f"records: {Path(args.out) / 'records.csv'} ({len(df)} images)")
    return 0


# --------------------------------------------------------------------------------------------
# pretrain


def _add_pretrain(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="continual DINOv2 pretraining (resumes an existing run folder)",
        description=(
            "Train a ViT with the DINOv2 recipe (DINO + iBOT + KoLeo, EMA teacher) at a preset. "
            "Re-running the same command on the same --out folder resumes from its newest "
            "checkpoint. Under torchrun every process runs this same command."
        ),
    )
    p.add_argument("--preset", default="laptop", help="smoke | laptop | paper (default laptop)")
    p.add_argument("--data", default=None, help="dataset folder (default: the cached phantom)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl)")
    p.add_argument("--init", default=None, help="random, or a local weights folder / file")
    p.add_argument("--no-mim", action="store_true", help="drop the iBOT masked-image loss")
    p.add_argument("--resolution", type=int, default=None, help="encoder input side (pixels)")
    p.add_argument("--max-images", type=int, default=None, help="cap on training images")
    p.add_argument("--cohorts", nargs="+", default=None, help="train on these cohorts only")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps")
    _add_param_option(p)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_pretrain)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from raddino_lib.config import ParameterError, make_config, with_resolution
    from raddino_lib.ssl.train import RunConfigMismatch, pretrain

    over: dict[str, Any] = {k: parse_value(v) for k, v in args.params or []}
    if args.init is not None:
        over["init"] = args.init
    if args.no_mim:
        over["mim"] = False
    if args.max_images is not None:
        over["max_images"] = args.max_images
    if args.cohorts:
        over["cohorts"] = tuple(args.cohorts)
    if args.data is not None:
        over["data_dir"] = args.data
    if args.no_progress:
        over["progress"] = False
    try:
        cfg = make_config(args.preset, **over)
        if args.resolution is not None:
            cfg = with_resolution(cfg, args.resolution)
    except (ParameterError, ValueError) as exc:
        _print_err(str(exc))
        return 2
    try:
        summary = pretrain(cfg, args.out, stop_after=args.stop_after)
    except (RunConfigMismatch, FileNotFoundError, ValueError) as exc:
        _print_err(str(exc))
        return 2
    if summary.world_size == 1 or _rank() == 0:
        print(
            f"pretrained {summary.steps} steps ({summary.images_seen} images, "
            f"{summary.images_per_s:.1f} images/s on {summary.device}, {summary.precision}) "
            f"-> {summary.run_dir}"
        )
    return 0


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


# --------------------------------------------------------------------------------------------
# export


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's encoder as a transformers Dinov2Model folder",
        description=(
            "Export the teacher backbone (or --student) of RUN's newest checkpoint as a folder "
            "that transformers' AutoModel / AutoImageProcessor load like microsoft/rad-dino "
            "(config.json, model.safetensors, preprocessor_config.json, "
            "backbone_compatible.safetensors, dino_head.safetensors)."
        ),
    )
    p.add_argument("run", help="run folder written by `raddino pretrain`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--student", action="store_true", help="export the student, not the teacher")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    from raddino_lib.ssl.export import export_run

    try:
        out = export_run(
            args.run,
            args.out,
            which="student" if args.student else "teacher",
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        _print_err(str(exc))
        return 2
    print(f"exported: {out}")
    return 0


# --------------------------------------------------------------------------------------------
# entry point

_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_chapter,
    _add_book,
    _add_phantom,
    _add_dataset,
    _add_pretrain,
    _add_export,
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
