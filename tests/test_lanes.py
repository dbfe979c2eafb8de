"""Runs side by side in their own processes (raddino_lib.lanes) are the runs the notebook would
have trained itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raddino_lib.config import PRESETS, make_config
from raddino_lib.eval.ablation import point_config, reference_point
from raddino_lib.lanes import Job, config_from_dict, lanes_for, run_job, train_side_by_side
from raddino_lib.ssl.checkpoint import latest_checkpoint
from raddino_lib.ssl.train import read_metrics


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from raddino_lib.data.phantom import generate_dataset

    root = tmp_path_factory.mktemp("lanes")
    os.environ["RADDINO_CACHE"] = str(root / "cache")
    generate_dataset(root / "phantom", 64, size=64, seed=1, progress=False)
    return root / "phantom"


def _cfg(**kw):
    base = dict(precision="fp32", progress=False, pretrain_steps=3, checkpoint_every=3,
                clip_steps=3)  # fmt: skip
    return make_config("smoke", **{**base, **kw})


def test_config_round_trips_through_its_dict():
    for cfg in PRESETS.values():
        assert config_from_dict(cfg.to_dict()) == cfg
    sweep = point_config(make_config("laptop"), reference_point(make_config("laptop")))
    back = config_from_dict(sweep.to_dict())
    assert back == sweep and isinstance(back.mask_ratio, tuple)
    with pytest.raises(ValueError, match="unknown fields"):
        config_from_dict({**sweep.to_dict(), "nope": 1})


def test_jobs_round_trip_and_are_dealt_into_lanes_of_equal_cost(tmp_path: Path):
    from raddino_lib.lanes import _bins, job_from_dict

    cfg = _cfg()
    job = Job("report", cfg, tmp_path / "g", None, 7)
    assert job_from_dict(job.to_dict()) == job and job.steps == 7
    assert job_from_dict(Job("clip", cfg, tmp_path / "c", tmp_path).to_dict()).steps == 3
    jobs = [Job("report", cfg, tmp_path / str(n), None, n) for n in (9, 5, 4, 3, 3, 2)]
    bins = _bins(jobs, 2)  # longest first, each to the lighter lane: 9+3+2 and 5+4+3
    assert [[j.steps for j in b] for b in bins] == [[9, 3, 2], [5, 4, 3]]
    assert len(_bins(jobs[:1], 3)) == 1


def test_lanes_for(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert lanes_for(_cfg(concurrent_runs=2, device="cpu")) == 2
    assert lanes_for(_cfg(concurrent_runs=4, device="cpu")) == 2  # capped by the cores
    assert lanes_for(_cfg(concurrent_runs=1, device="cpu")) == 1
    monkeypatch.setenv("RANK", "0")  # under torchrun: one run at a time
    assert lanes_for(_cfg(concurrent_runs=2, device="cpu")) == 1


def test_side_processes_train_the_same_runs(data: Path, tmp_path: Path):
    """A DINO run and a CLIP run trained side by side are finished, resumable-format runs, and
    the DINO one has the weights of the same run trained in this process."""
    cfg = _cfg()
    side = [
        Job("pretrain", cfg, tmp_path / "dino", data),
        Job("clip", cfg, tmp_path / "clip", data),
    ]
    trained = train_side_by_side(side, lanes=2, progress=False)
    assert {j.run_dir for j in trained} == {tmp_path / "dino", tmp_path / "clip"}
    assert all(j.done for j in side)
    assert len(read_metrics(tmp_path / "dino")) == 3
    here = Job("pretrain", cfg, tmp_path / "here", data)
    run_job(here, progress=False)
    a = load_file(str(latest_checkpoint(tmp_path / "dino" / "checkpoints") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "here" / "checkpoints") / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    # finished runs are not trained again
    assert train_side_by_side(side, lanes=2, progress=False) == []


def test_a_failing_side_process_names_its_run_and_log(data: Path, tmp_path: Path):
    cfg = _cfg()
    jobs = [
        Job("pretrain", cfg, tmp_path / "ok", data),
        Job("pretrain", cfg, tmp_path / "bad", tmp_path / "no_such_dataset"),
    ]
    with pytest.raises(RuntimeError, match=r"training .*bad \(pretrain\) in a side process failed"):
        train_side_by_side(jobs, lanes=2, progress=False, poll_s=0.2)
    with pytest.raises(ValueError, match="kind"):
        Job("finetune", cfg, tmp_path / "x")


def test_book_encoders_jobs_are_the_runs_the_loaders_read(data: Path, tmp_path: Path):
    """The jobs behind chapter 3's baselines, once trained, are what book_encoders loads
    without training (same folders, same data), and nothing is left to train."""
    from raddino_lib.eval import compare as cmp

    cfg = _cfg(general_pretrain_steps=2, clip_steps=2, data_dir=str(data), concurrent_runs=2)
    names = [cmp.GENERAL, cmp.TEXT_SUP, cmp.REFERENCE]
    jobs = cmp.side_by_side_jobs(cfg, names)
    assert [j.kind for j in jobs] == ["pretrain", "clip", "pretrain"]
    assert jobs[1].data_dir == jobs[2].data_dir == Path(data)
    assert jobs[0].data_dir != Path(data)  # the natural images
    for job in jobs:
        run_job(job, progress=False)
    assert cmp.side_by_side_jobs(cfg, names) == []
    enc = cmp.book_encoders(cfg, include=names, train=False)
    assert list(enc) == names


def test_side_processes_stop_when_their_parent_is_killed(data: Path, tmp_path: Path):
    """SIGKILL of the process that started the side runs (a killed kernel) stops them too:
    their metrics stop growing, and each keeps a resumable folder."""
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from raddino_lib.config import make_config\n"
        "from raddino_lib.lanes import Job, train_side_by_side\n"
        "cfg = make_config('smoke', precision='fp32', progress=False, pretrain_steps=100000,\n"
        "                  checkpoint_every=20)\n"
        "d, out = Path(sys.argv[1]), Path(sys.argv[2])\n"
        "jobs = [Job('pretrain', cfg, out / r, d) for r in ('a', 'b')]\n"
        "train_side_by_side(jobs, lanes=2, progress=False, poll_s=0.2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    parent = subprocess.Popen([sys.executable, str(script), str(data), str(tmp_path)], env=env)
    metrics = [tmp_path / r / "metrics.jsonl" for r in ("a", "b")]

    def lines() -> list[int]:
        return [len(m.read_text().splitlines()) if m.is_file() else 0 for m in metrics]

    deadline = time.time() + 120
    while min(lines()) < 3:
        assert parent.poll() is None and time.time() < deadline, "side runs did not start"
        time.sleep(0.5)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    time.sleep(3)
    before = lines()
    time.sleep(4)
    assert lines() == before, "side runs kept training after their parent died"
