"""Independent training runs side by side on a CPU, one process each (``cfg.concurrent_runs``).

Two cached runs that a chapter needs and that do not depend on each other (the general-domain
DINO run and the text-supervised CLIP run of chapter 3; the MIM pair of chapter 6) can train
at the same time, each in its own process on its share of the cores, instead of one after the
other on all of them. On a small CPU this is faster because one run does not keep every core
busy: on the 2-core machine of this book (ViT 192 x 6 at 64 px, bf16 autocast), a sweep step
of batch 32 took 0.458 s on 2 threads and 0.70 s on 1 thread with a second run beside it, so
two such runs finish 1.31x sooner side by side; the CLIP step (batch 128) 0.886 s against
1.44 s (1.23x). A main-run step of batch 64 gains only 1.04x (0.75 s against 1.44 s), which is
why the main run is not paired.

A run trained in a side process is the same run as one trained in the notebook: same config,
same cache folder, same seeds, resumable from its checkpoints; only the thread count differs,
which can change the last bits of float sums (as a different machine would).

* :class:`Job` -- one run: what to train (``"pretrain"`` or ``"clip"``), its config, folder and
  data folder;
* :func:`train_side_by_side` -- train the unfinished jobs, ``lanes`` at a time;
* ``python -m raddino_lib.lanes JOB.json`` -- the side process's entry point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from raddino_lib.config import PRESETS, Config

__all__ = ["Job", "config_from_dict", "lanes_for", "train_side_by_side"]

_KINDS = ("pretrain", "clip")
_PARENT_ENV = "RADDINO_LANES_PARENT"


@dataclass(frozen=True)
class Job:
    """One training run.

    Attributes:
        kind: ``"pretrain"`` (:func:`raddino_lib.ssl.train.pretrain`) or ``"clip"``
            (:func:`raddino_lib.textsup.train.train_clip`).
        cfg: the run's configuration.
        run_dir: its cache folder (``done.json`` there marks it finished).
        data_dir: the dataset folder (None: the config's own, as the trainers default).
    """

    kind: str
    cfg: Config
    run_dir: Path
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Job kind must be one of {_KINDS}, got {self.kind!r}")

    @property
    def done(self) -> bool:
        return (Path(self.run_dir) / "done.json").is_file()

    @property
    def steps(self) -> int:
        return int(self.cfg.clip_steps if self.kind == "clip" else self.cfg.pretrain_steps)

    def cost(self) -> float:
        """A rough size, to start the longest first: steps x images x tokens per image."""
        c = self.cfg
        batch = c.clip_batch_size if self.kind == "clip" else c.batch_size
        return float(self.steps * batch * (c.image_size // c.patch_size) ** 2)

    def to_json(self, threads: int) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "config": self.cfg.to_dict(),
                "run_dir": str(self.run_dir),
                "data_dir": None if self.data_dir is None else str(self.data_dir),
                "threads": int(threads),
            }
        )


def config_from_dict(d: dict[str, Any]) -> Config:
    """Inverse of :meth:`Config.to_dict` (lists back to tuples)."""
    names = {f.name for f in fields(Config)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"config has unknown fields {unknown}")
    base = PRESETS[d.get("preset", "laptop")]
    return replace(base, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def lanes_for(cfg: Config) -> int:
    """How many runs may train side by side: ``cfg.concurrent_runs`` on a CPU, capped by the
    cores torch uses; 1 on a GPU, under torchrun, or with a single core."""
    import torch

    from raddino_lib.ssl.train import resolve_device

    if resolve_device(cfg.device).type != "cpu" or "RANK" in os.environ:
        return 1
    return max(1, min(int(cfg.concurrent_runs), torch.get_num_threads()))


def run_job(job: Job, progress: bool | None = None) -> None:
    """Train ``job`` in this process (resuming it when it has checkpoints)."""
    if job.kind == "clip":
        from raddino_lib.textsup.train import train_clip

        train_clip(job.cfg, job.run_dir, data_dir=job.data_dir, progress=progress)
    else:
        from raddino_lib.ssl.train import pretrain

        pretrain(job.cfg, job.run_dir, data_dir=job.data_dir, progress=progress)


def _steps_logged(job: Job) -> int:
    path = Path(job.run_dir) / "metrics.jsonl"
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def _die_with_parent(parent: int) -> None:  # pragma: no cover - runs in the child
    """Linux: this side process gets SIGTERM when the process that started it dies (a killed
    kernel must not leave a run training behind it). Set by the child itself, first thing (a
    ``preexec_fn`` would run between fork and exec of a threaded parent); a parent that died
    before that is caught by the ``getppid`` check."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(f"the process that started this side run ({parent}) is gone")


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def train_side_by_side(
    jobs: Sequence[Job], *, lanes: int, progress: bool = True, poll_s: float = 2.0
) -> list[Job]:
    """Train the unfinished ``jobs``: with ``lanes`` >= 2 and two or more unfinished, each in
    a side process on ``cores // lanes`` threads, ``lanes`` at a time, longest first; else
    one after the other in this process. Returns the jobs that were trained.

    Raises:
        RuntimeError: a side process failed; its log's tail is in the message. The other side
            processes are stopped; every run keeps its last checkpoint and resumes on a rerun.
    """
    import torch
    from tqdm.auto import tqdm

    todo = sorted((j for j in jobs if not j.done), key=lambda j: -j.cost())
    if lanes < 2 or len(todo) < 2:
        for job in todo:
            run_job(job)
        return todo
    threads = max(1, torch.get_num_threads() // lanes)
    root = Path(raddino_root())
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p),
        _PARENT_ENV: str(os.getpid()),
    }
    tmp = Path(tempfile.mkdtemp(prefix="raddino-lanes-"))
    queue = list(todo)
    running: list[tuple[Job, subprocess.Popen, Path]] = []
    start = {id(j): _steps_logged(j) for j in todo}
    bar = tqdm(
        total=sum(j.steps - start[id(j)] for j in todo),
        desc=f"{len(todo)} runs, {lanes} side by side",
        unit="step",
        disable=not progress,
    )
    seen = 0
    try:
        while queue or running:
            while queue and len(running) < lanes:
                job = queue.pop(0)
                k = len(todo) - len(queue)
                spec, log = tmp / f"job{k}.json", tmp / f"job{k}.log"
                spec.write_text(job.to_json(threads))
                with open(log, "wb") as fh:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "raddino_lib.lanes", str(spec)],
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                running.append((job, proc, log))
            time.sleep(poll_s)
            for entry in list(running):
                job, proc, log = entry
                rc = proc.poll()
                if rc is None:
                    continue
                running.remove(entry)
                if rc != 0 or not job.done:
                    raise RuntimeError(
                        f"training {job.run_dir} ({job.kind}) in a side process failed "
                        f"(exit {rc}); its log {log} ends with:\n{_tail(log)}\n"
                        "Rerun to resume from its last checkpoint, or set concurrent_runs=1 "
                        "to train in the notebook's process."
                    )
            now = sum(min(j.steps, _steps_logged(j)) - start[id(j)] for j in todo)
            bar.update(max(0, now - seen))
            seen = max(seen, now)
    finally:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        bar.close()
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return todo


def raddino_root() -> str:
    """The folder that holds the ``raddino_lib`` package (for the side processes' path)."""
    return str(Path(__file__).resolve().parents[1])


def _main(argv: Sequence[str]) -> int:  # pragma: no cover - exercised through subprocesses
    if len(argv) != 1:
        print("usage: python -m raddino_lib.lanes JOB.json", file=sys.stderr)
        return 2
    if _PARENT_ENV in os.environ:
        _die_with_parent(int(os.environ[_PARENT_ENV]))
    import torch

    spec = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    job = Job(
        spec["kind"],
        config_from_dict(spec["config"]),
        Path(spec["run_dir"]),
        None if spec["data_dir"] is None else Path(spec["data_dir"]),
    )
    run_job(job, progress=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
