"""Multi-process training on CPU with gloo: two ranks under torchrun (tests/distributed_worker.py
probes them), and two ranks started by hand with torchrun's environment variables, which is
also what a rank sees when a peer on another node dies and no launcher cleans up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.test_training import SMALL, states_equal, train

from cocogan.checkpoint import load_state, resumable_steps
from cocogan.config import ConfigError
from cocogan.training.datastream import ResumableBatchSampler
from cocogan.training.distributed import (
    World,
    _buckets,
    average_norm_statistics,
    pick_backend,
    world_from_env,
)
from cocogan.training.signals import StopFlag
from cocogan.training.state import TrainState, rank_step_generator, restore_payload
from cocogan.training.step import build_optimizers

WORKER = Path(__file__).with_name("distributed_worker.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
TRAIN = ["--preset", "tiny", "--data", "builtin:blobs", "--device", "cpu", *SMALL]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(**extra: str) -> dict[str, str]:
    """One thread per rank; no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


def torchrun(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    command = [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "--max-restarts", "0", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=quiet_env(), cwd=WORKER.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def start_ranks(run: Path, *extra: str) -> list[subprocess.Popen[str]]:
    """Two `python -m cocogan train` ranks with the variables torchrun would set."""
    port = str(free_port())
    return [subprocess.Popen(
        [sys.executable, "-m", "cocogan", "train", "--out", str(run), "--steps", "100000",
         *extra, *TRAIN, "train.checkpoint_every=100000", "train.sample_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=quiet_env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port)) for rank in range(2)]


def wait_for_steps(run: Path, processes: list[subprocess.Popen[str]], steps: int) -> None:
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and all(p.poll() is None for p in processes):
        if metrics.is_file() and metrics.read_text().count("\n") >= steps:
            return
        time.sleep(0.2)
    raise AssertionError(f"the ranks did not reach step {steps}: "
                         f"{[p.poll() for p in processes]}")


# ---- two ranks under torchrun ------------------------------------------------------------------
def test_torchrun_ranks_stay_identical_rank0_writes_and_one_process_resumes(
        tmp_path: Path) -> None:
    """3 steps on 2 ranks: after every step all weights, buffers, EMA and Adam states are
    bitwise equal across ranks; rank 1 creates no file; rank 0 evaluates alone (its D-head
    copy must not synchronise); the run then continues in 1 process."""
    run = tmp_path / "run"
    result = torchrun(WORKER, "cli", tmp_path, run, "--", *TRAIN, "--out", run, "--steps", "3",
                      "--eval-every", "2", "--eval-n", "8", "--eval-metrics", "spatial")
    reports = [json.loads((tmp_path / f"rank-{r}.json").read_text()) for r in range(2)]
    for report in reports:
        assert report["code"] == 0
        assert report["gaps"] == [0.0, 0.0, 0.0]  # one comparison per step, all exact
    assert reports[1]["writes"] == []
    assert any("metrics.jsonl" in w for w in reports[0]["writes"])  # the probe sees writes
    assert any("checkpoints" in w for w in reports[0]["writes"])
    assert result.stdout.count("done: 3 steps") == 1  # one rank prints
    assert "2 processes x 2 images per step" in result.stdout
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss_D" in r] == [1, 2, 3]
    assert [r["step"] for r in records if any(k.startswith("eval/") for k in r)] == [2, 3]
    state = load_state(run / "checkpoints" / "step-00000003.state.pt")
    rank_rngs = state["rng"]["step_ranks"]
    assert len(rank_rngs) == 2 and not torch.equal(rank_rngs[0], rank_rngs[1])
    assert torch.equal(state["rng"]["step"], rank_rngs[0])
    assert state["data"]["batches"] == 3  # global batches: the same unit as one process

    assert train("--resume", run, "--steps", 5) == 0  # one process continues the run
    assert resumable_steps(run)[-1] == 5
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "loss_D" in r] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_two_process_resume_is_exact(tmp_path: Path) -> None:
    """4 steps on 2 ranks == 2 steps, stop, 2 more on 2 ranks: every tensor and RNG equal."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    for run, steps in ((straight, 4), (split, 2)):
        torchrun("-m", "cocogan", "train", *TRAIN, "--out", run, "--steps", steps)
    torchrun("-m", "cocogan", "train", "--resume", split, "--steps", 4)
    a = load_state(straight / "checkpoints" / "step-00000004.state.pt")
    b = load_state(split / "checkpoints" / "step-00000004.state.pt")
    a.pop("elapsed"), b.pop("elapsed")
    assert states_equal(a, b)
    weights = [load_file(run / "checkpoints" / "step-00000004.safetensors")
               for run in (straight, split)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_two_half_batches_match_one_full_batch(tmp_path: Path) -> None:
    """2 x (B/2) with averaged gradients == 1 x B, given the same images, latents, positions
    and GP factors (B = 8, tiny model; relative = ||ours - one process|| / ||one process||).

    - batch-independent (frozen) BN isolates the gradient averaging: gradients, outputs and
      weights agree to float32 rounding at every step (< 1e-5; measured <= 7e-7);
    - synchronised BN (the default): the first step's gradients agree to < 1e-3 (measured
      1e-4 to 4e-4); later steps drift because Adam scales the rounding noise of gradients that
      are exactly zero in theory (biases followed by batch norm) up to +-lr;
    - per-rank BN (--dist-norm per-rank): the first step's gradients differ by 60-120 %.
    """
    torchrun(WORKER, "halves", tmp_path, "2")
    report = json.loads((tmp_path / "halves.json").read_text())
    grads = ("grad_d", "grad_q", "grad_g")
    assert all(len(report[norm]) == 2 for norm in ("frozen", "sync", "per-rank"))
    for gap in report["frozen"]:
        assert all(gap[k] < 1e-5 for k in (*grads, "outputs")), gap
        assert gap["bn_stats_max_abs"] == 0.0  # frozen: running statistics never move
    first = report["sync"][0]
    assert all(first[k] < 1e-3 for k in grads), first
    assert first["outputs"] < 0.02, first
    per_rank = report["per-rank"][0]
    assert all(per_rank[k] > 0.1 for k in grads), per_rank  # what synchronising avoids


# ---- ranks started with torchrun's variables, no launcher ---------------------------------------
def test_a_killed_rank_ends_the_other_with_one_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ranks = start_ranks(run)
    wait_for_steps(run, ranks, 2)
    ranks[1].kill()
    killed = time.monotonic()
    _, err = ranks[0].communicate(timeout=60)
    assert time.monotonic() - killed < 60
    assert ranks[0].returncode == 1, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "lost the other training processes" in lines[0]
    assert "no checkpoint was written" in lines[0]  # checkpoint_every=100000: none to resume
    ranks[1].communicate()


@pytest.mark.slow
def test_a_silent_rank_times_out(tmp_path: Path) -> None:
    """A rank that stops answering (SIGSTOP; a hung node) fails the others after --dist-timeout."""
    run = tmp_path / "run"
    ranks = start_ranks(run, "--dist-timeout", "5")
    wait_for_steps(run, ranks, 2)
    ranks[1].send_signal(signal.SIGSTOP)
    try:
        _, err = ranks[0].communicate(timeout=90)
        assert ranks[0].returncode == 1 and "lost the other training processes" in err, err
    finally:
        ranks[1].kill()
        ranks[1].communicate()


def test_sigterm_on_one_rank_stops_all_with_one_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ranks = start_ranks(run)
    wait_for_steps(run, ranks, 2)
    ranks[1].send_signal(signal.SIGTERM)
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs
    assert "a stop signal on another rank" in outputs[0][0]
    assert outputs[1][0] == ""  # rank 1 prints nothing
    steps = resumable_steps(run)
    assert len(steps) == 1 and steps[0] >= 2


# ---- in-process pieces -------------------------------------------------------------------------
def test_ranks_read_disjoint_slices_of_the_global_batches() -> None:
    whole = ResumableBatchSampler(12, 4, seed=3, start=1)
    halves = [ResumableBatchSampler(12, 4, seed=3, start=1, shard=(r, 2)) for r in range(2)]
    batches = [b for _, b in zip(range(6), iter(whole), strict=False)]  # two epochs of 3
    shards = [[b for _, b in zip(range(6), iter(h), strict=False)] for h in halves]
    for batch, first, second in zip(batches, *shards, strict=True):
        assert first + second == batch and len(first) == len(second) == 2


def test_step_rngs_differ_across_ranks_and_follow_the_seed() -> None:
    fresh = [TrainState.fresh(5, 2, 3, rank=rank).step_rng for rank in range(3)]
    draws = [torch.rand(4, generator=g) for g in fresh]
    assert torch.equal(draws[0], torch.rand(4, generator=TrainState.fresh(5, 2, 3).step_rng))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
    assert torch.equal(draws[1], torch.rand(4, generator=rank_step_generator(5, 1)))


def test_resume_takes_each_ranks_saved_rng_and_derives_missing_ones() -> None:
    from cocogan.config import Config
    from cocogan.model import CocoGAN
    from cocogan.training.state import state_payload

    config = Config()
    config.model.z_dim, config.model.ngf, config.model.ndf = 8, 8, 8
    model = CocoGAN(config.model)
    optimizers = build_optimizers(model, config.train)
    states = [rank_step_generator(1, r).get_state() for r in range(2)]
    payload = state_payload(TrainState.fresh(1, 2, 8), optimizers, {"batches": 0}, states)
    resumed = [restore_payload(payload, optimizers, 0, rank=rank, seed=1).step_rng
               for rank in range(3)]
    assert torch.equal(resumed[1].get_state(), states[1])
    assert torch.equal(resumed[2].get_state(), rank_step_generator(1, 2, 0).get_state())
    single = state_payload(TrainState.fresh(1, 2, 8), optimizers, {"batches": 0}, states[:1])
    assert "step_ranks" not in single["rng"]  # one-process checkpoints are unchanged


def test_world_from_env_and_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert not world_from_env().enabled
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    world = world_from_env(60)
    assert (world.rank, world.size, world.is_main, world.timeout_s) == (2, 4, False, 60)
    assert world.place(torch.device("cuda")) == torch.device("cuda", 0)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="launch with torchrun"):
        world_from_env()
    assert pick_backend("auto", torch.device("cpu")) == "gloo"
    assert pick_backend("auto", torch.device("cuda", 1)) == "nccl"
    with pytest.raises(ConfigError, match="nccl needs GPUs"):
        pick_backend("nccl", torch.device("cpu"))
    with pytest.raises(ConfigError, match="multiple of 4"):
        World(size=4).local_batch(6)
    assert World(size=4).local_batch(8) == 2


def test_gradient_buckets_keep_order_dtype_and_size() -> None:
    tensors = [torch.zeros(100), torch.zeros(300), torch.zeros(50, dtype=torch.float64),
               torch.zeros(10), torch.zeros(1000)]
    buckets = list(_buckets(tensors, limit=1600))
    assert [t for b in buckets for t in b] == tensors
    assert [len(b) for b in buckets] == [2, 1, 1, 1]  # 1600 bytes = 400 float32
    assert all(len({t.dtype for t in b}) == 1 for b in buckets)


def test_norm_statistics_average_is_a_no_op_in_one_process() -> None:
    layer = torch.nn.BatchNorm1d(3)
    layer(torch.randn(8, 3))
    before = layer.running_mean.clone()
    average_norm_statistics(World(), layer)
    assert torch.equal(layer.running_mean, before)


def test_a_repeated_signal_within_the_window_is_one_request() -> None:
    stop = StopFlag(repeat_window_s=60.0)
    stop._handle(signal.SIGINT, None)
    stop._handle(signal.SIGINT, None)  # the launcher's forwarded copy: no KeyboardInterrupt
    assert stop.signal_name == "SIGINT"
    impatient = StopFlag()
    impatient._handle(signal.SIGTERM, None)
    with pytest.raises(KeyboardInterrupt):
        impatient._handle(signal.SIGTERM, None)


def test_start_up_checks_pass_or_fail_on_all_ranks_together(tmp_path: Path) -> None:
    """A folder of the user's own files is refused by both ranks at once (no rank is left
    waiting for a peer), and nothing in it changes."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    ranks = start_ranks(run)
    outputs = [rank.communicate(timeout=120) for rank in ranks]
    assert [rank.returncode for rank in ranks] == [2, 2], outputs
    assert all("already holds files cocogan did not write" in err for _, err in outputs)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]
