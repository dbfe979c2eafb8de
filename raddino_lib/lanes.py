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

Chapter 7's report generators (small decoders of small steps, which keep two cores even less
busy) train the same way once their inputs are written (kind ``"report"``,
:func:`raddino_lib.report.train.write_fit_inputs`): five generators took 113 s side by side
against 183 s one after the other. Not everything gains: chapter 6's U-Net trained in a side
process on one core beside the frozen heads on the other took the segmentation step from
402 s to 405 s (its convolutions use two threads well: 1 thread was 2x slower), so it trains
in the notebook.

* :class:`Job` -- one run: what to train (``"pretrain"``, ``"clip"`` or ``"report"``), its
  config, folder and data folder;
* :func:`train_side_by_side` -- train the unfinished jobs in ``lanes`` side processes;
* ``python -m raddino_lib.lanes LANE.json`` -- a side process's entry point (its jobs, in
  order, and its thread count).
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

__all__ = [
    "Job",
    "SideRuns",
    "config_from_dict",
    "job_from_dict",
    "lanes_for",
    "train_side_by_side",
]

_KINDS = ("pretrain", "clip", "report")
_PARENT_ENV = "RADDINO_LANES_PARENT"


@dataclass(frozen=True)
class Job:
    """One training run.

    Attributes:
        kind: ``"pretrain"`` (:func:`raddino_lib.ssl.train.pretrain`), ``"clip"``
            (:func:`raddino_lib.textsup.train.train_clip`) or ``"report"``
            (:func:`raddino_lib.report.train.fit_from_inputs`, inputs written beforehand).
        cfg: the run's configuration.
        run_dir: its cache folder (``done.json`` there marks it finished; ``run.json`` for a
            report generator).
        data_dir: the dataset folder (None: the config's own, as the trainers default).
        n_steps: the run's optimiser steps when the config does not say (report generators).
    """

    kind: str
    cfg: Config
    run_dir: Path
    data_dir: Path | None = None
    n_steps: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Job kind must be one of {_KINDS}, got {self.kind!r}")

    @property
    def done(self) -> bool:
        marker = "run.json" if self.kind == "report" else "done.json"
        return (Path(self.run_dir) / marker).is_file()

    @property
    def steps(self) -> int:
        if self.n_steps is not None:
            return int(self.n_steps)
        return int(self.cfg.clip_steps if self.kind == "clip" else self.cfg.pretrain_steps)

    def cost(self) -> float:
        """A rough size, to start the longest first: steps x images x tokens per image."""
        c = self.cfg
        batch = {"clip": c.clip_batch_size, "report": c.rg_batch_size}.get(self.kind, c.batch_size)
        return float(self.steps * batch * (c.image_size // c.patch_size) ** 2)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON values (:func:`job_from_dict` reads it back)."""
        return {
            "kind": self.kind,
            "config": self.cfg.to_dict(),
            "run_dir": str(self.run_dir),
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "n_steps": self.n_steps,
        }


def job_from_dict(d: dict[str, Any]) -> Job:
    """Inverse of :meth:`Job.to_dict`."""
    return Job(
        d["kind"],
        config_from_dict(d["config"]),
        Path(d["run_dir"]),
        None if d["data_dir"] is None else Path(d["data_dir"]),
        d.get("n_steps"),
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
    elif job.kind == "report":
        from raddino_lib.report.train import fit_from_inputs

        fit_from_inputs(job.run_dir, progress=job.cfg.progress if progress is None else progress)
    else:
        from raddino_lib.ssl.train import pretrain

        pretrain(job.cfg, job.run_dir, data_dir=job.data_dir, progress=progress)


def _steps_logged(job: Job) -> int:
    if job.kind == "report":  # a generator logs no steps: counted when it is saved
        return job.steps if job.done else 0
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


def _bins(todo: Sequence[Job], lanes: int) -> list[list[Job]]:
    """``todo`` (longest first) dealt into ``lanes`` lists of about equal total cost: each job
    to the lightest list so far."""
    bins: list[list[Job]] = [[] for _ in range(min(lanes, len(todo)))]
    load = [0.0] * len(bins)
    for job in todo:
        i = load.index(min(load))
        bins[i].append(job)
        load[i] += job.cost()
    return bins


class SideRuns:
    """Jobs training in side processes while this process goes on.

    ``SideRuns(jobs, processes=2, threads=1)`` deals the unfinished ``jobs`` into
    ``processes`` shares of about equal cost and starts one process per share on ``threads``
    threads, each training its share one job after the other; :meth:`poll` says whether all
    have finished, :meth:`wait` waits for them, :meth:`stop` stops them (each run keeps its last
    checkpoint). A side process that fails raises a ``RuntimeError`` that names the job and
    ends with its log's tail; the others are stopped.
    """

    def __init__(self, jobs: Sequence[Job], *, processes: int, threads: int) -> None:
        self.todo = sorted((j for j in jobs if not j.done), key=lambda j: -j.cost())
        self._start = {id(j): _steps_logged(j) for j in self.todo}
        self._tmp = Path(tempfile.mkdtemp(prefix="raddino-lanes-"))
        self._running: list[tuple[list[Job], subprocess.Popen, Path]] = []
        root = Path(raddino_root())
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(root), os.environ.get("PYTHONPATH")) if p
            ),
            _PARENT_ENV: str(os.getpid()),
        }
        try:
            for k, share in enumerate(_bins(self.todo, processes) if self.todo else []):
                spec, log = self._tmp / f"lane{k}.json", self._tmp / f"lane{k}.log"
                spec.write_text(
                    json.dumps({"threads": threads, "jobs": [j.to_dict() for j in share]})
                )
                with open(log, "wb") as fh:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "raddino_lib.lanes", str(spec)],
                        stdout=fh,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                self._running.append((share, proc, log))
        except BaseException:
            self.stop()
            raise

    @property
    def total_steps(self) -> int:
        return sum(j.steps - self._start[id(j)] for j in self.todo)

    def steps_done(self) -> int:
        return sum(min(j.steps, _steps_logged(j)) - self._start[id(j)] for j in self.todo)

    def poll(self) -> bool:
        """True once every side process has finished (raises if one failed)."""
        for entry in list(self._running):
            share, proc, log = entry
            rc = proc.poll()
            if rc is None:
                continue
            self._running.remove(entry)
            failed = [j for j in share if not j.done]
            if rc != 0 or failed:
                self.stop()
                job = failed[0] if failed else share[-1]
                raise RuntimeError(
                    f"training {job.run_dir} ({job.kind}) in a side process failed "
                    f"(exit {rc}); its log {log} ends with:\n{_tail(log)}\n"
                    "Rerun to resume from its last checkpoint, or set concurrent_runs=1 "
                    "to train in the notebook's process."
                )
        if not self._running:
            self._cleanup()
            return True
        return False

    def wait(self, *, progress: bool = False, desc: str = "", poll_s: float = 2.0) -> None:
        """Wait for every side process (a progress bar of steps with ``progress``)."""
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, desc=desc, unit="step", disable=not progress)
        seen = 0
        try:
            while not self.poll():
                time.sleep(poll_s)
                now = self.steps_done()
                bar.update(max(0, now - seen))
                seen = max(seen, now)
        except BaseException:
            self.stop()
            raise
        finally:
            bar.close()

    def stop(self) -> None:
        """Stop the side processes still running."""
        for _, proc, _ in self._running:
            proc.terminate()
        for _, proc, _ in self._running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._running = []

    def _cleanup(self) -> None:
        if self._tmp.is_dir():
            for p in self._tmp.iterdir():
                p.unlink()
            self._tmp.rmdir()


def train_side_by_side(
    jobs: Sequence[Job], *, lanes: int, progress: bool = True, poll_s: float = 2.0
) -> list[Job]:
    """Train the unfinished ``jobs``: with ``lanes`` >= 2 and two or more unfinished, in
    ``lanes`` side processes on ``cores // lanes`` threads each (:class:`SideRuns`: shares of
    about equal cost, longest jobs first, one process per share, not per job, so that many
    short jobs pay the start-up once); else one after the other in this process. Returns the
    jobs that were trained.

    Raises:
        RuntimeError: a side process failed; its log's tail is in the message. The other side
            processes are stopped; every run keeps its last checkpoint and resumes on a rerun.
    """
    import torch

    todo = sorted((j for j in jobs if not j.done), key=lambda j: -j.cost())
    if lanes < 2 or len(todo) < 2:
        for job in todo:
            run_job(job)
        return todo
    runs = SideRuns(todo, processes=lanes, threads=max(1, torch.get_num_threads() // lanes))
    runs.wait(progress=progress, desc=f"{len(todo)} runs, {lanes} side by side", poll_s=poll_s)
    return todo


def raddino_root() -> str:
    """The folder that holds the ``raddino_lib`` package (for the side processes' path)."""
    return str(Path(__file__).resolve().parents[1])


def _main(argv: Sequence[str]) -> int:  # pragma: no cover - exercised through subprocesses
    if len(argv) != 1:
        print("usage: python -m raddino_lib.lanes LANE.json", file=sys.stderr)
        return 2
    if _PARENT_ENV in os.environ:
        _die_with_parent(int(os.environ[_PARENT_ENV]))
    import torch

    spec = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(int(spec["threads"]))
    for d in spec["jobs"]:
        run_job(job_from_dict(d), progress=False)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
