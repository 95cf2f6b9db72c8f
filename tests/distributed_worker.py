"""One rank of the multi-process tests (tests/test_distributed.py runs it under torchrun).

python distributed_worker.py cli REPORT_DIR RUN_DIR -- TRAIN_ARGS...
    `cocogan train TRAIN_ARGS` with two probes: after every step all ranks compare their weights
    (G, D, EMA G, buffers) and Adam states; each rank records every file it creates, writes,
    renames or deletes under RUN_DIR. Reports go to REPORT_DIR/rank-R.json.
python distributed_worker.py halves REPORT_DIR STEPS PRESET
    A few train_step calls of PRESET at widths 8 on fixed images, latents, positions and GP
    factors: each rank takes its half of the batch; rank 0 also trains copies on the whole batch
    in one process, in float32 and in float64 (the oracle). Batch norm: synchronised, per rank,
    and frozen (batch-independent, to isolate the gradients). REPORT_DIR/halves.json holds the
    gradient and output differences after every step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from cocogan import losses
from cocogan.cli import main
from cocogan.training import loop, step
from cocogan.training.distributed import (
    average_gradients_before_step,
    average_norm_statistics,
    shutdown,
    tracked_norms,
)
from cocogan.training.distributed import init as init_world
from cocogan.training.sync_norm import synchronise_batch_norm

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def flat_state(model: torch.nn.Module, optimizers: step.Optimizers | None = None) -> torch.Tensor:
    """Every parameter and buffer (and Adam moment) as one float64 vector."""
    parts = [t.detach().double().reshape(-1) for t in model.state_dict().values()]
    if optimizers is not None:
        for optimizer in (optimizers.g, optimizers.d, optimizers.q):
            for state in optimizer.state.values():
                parts += [state["exp_avg"].double().reshape(-1),
                          state["exp_avg_sq"].double().reshape(-1)]
    return torch.cat(parts)


def run_cli(report_dir: Path, run_dir: Path, args: list[str]) -> int:
    rank = int(os.environ["RANK"])
    run_root = str(run_dir.resolve())
    writes: list[str] = []
    gaps: list[float] = []

    def audit(event: str, payload: tuple) -> None:
        path = None
        if event == "open" and isinstance(payload[0], (str, bytes, os.PathLike)):
            mode, flags = payload[1] or "", payload[2] or 0
            if any(c in mode for c in "wax+") or flags & WRITE_FLAGS:
                path = payload[0]
        elif event in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"):
            path = payload[0]
        if path is not None and os.path.abspath(os.fsdecode(path)).startswith(run_root):
            writes.append(f"{event} {os.fsdecode(path)}")

    sys.addaudithook(audit)  # on rank 0 too, to show that the probe sees writes
    update_ema = loop.Trainer.update_ema

    def checked_update_ema(trainer: loop.Trainer) -> None:
        update_ema(trainer)
        mine = flat_state(trainer.model, trainer.optimizers)
        everyone = [torch.empty_like(mine) for _ in range(trainer.world.size)]
        dist.all_gather(everyone, mine)
        gaps.append(max((e - everyone[0]).abs().max().item() for e in everyone))

    loop.Trainer.update_ema = checked_update_ema  # type: ignore[method-assign]
    code = main(["train", *args])
    report = {"code": code, "gaps": gaps, "writes": writes}
    (report_dir / f"rank-{rank}.json").write_text(json.dumps(report))
    return code


def reduce_losses(report_dir: Path) -> int:
    """N12: each rank's losses through the loop's reduction; maxima must be the global ones."""
    from cocogan.training.distributed import mean_losses
    from cocogan.training.logging import is_maximum

    world = init_world(torch.device("cpu"), "gloo")
    rank = torch.tensor(float(world.rank))
    losses = {"L_W": rank, "GP_norm_max": 3.0 - rank, "extrap/GP_norm_max": 1.0 + rank}
    reduced = mean_losses(world, losses, torch.device("cpu"), maximum=is_maximum)
    (report_dir / f"rank-{world.rank}.json").write_text(
        json.dumps({name: float(value) for name, value in reduced.items()}))
    shutdown(together=True)  # no rank leaves while the other still talks to it
    return 0


def run_halves(report_dir: Path, steps: int, preset: str) -> int:
    """2 x (B/2) against 1 x B on the same data, latents, positions and GP factors."""
    import torch.nn.functional as F

    from cocogan.model import CocoGAN, generate_macro
    from cocogan.presets import get_preset

    world = init_world(torch.device("cpu"), "gloo")
    rank, size = world.rank, world.size
    config = get_preset(preset)
    config.model.z_dim, config.model.ngf, config.model.ndf, config.model.aux_hidden = 8, 8, 8, 16
    batch = 8
    local = slice(rank * batch // size, (rank + 1) * batch // size)
    images = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(7)) * 2 - 1
    sample_step, gradient_penalty, batch_norm = (step.sample_step, losses.gradient_penalty,
                                                 F.batch_norm)
    current = {"step": 0}

    def part_of(rows: int) -> slice:
        return slice(0, batch) if rows == batch else local

    def fixed_sample_step(model, images_part, train, rng, **options):
        """This part's rows of the whole batch's draws (z, positions) of this step."""
        full = sample_step(model, images, train,
                           torch.Generator().manual_seed(1000 + current["step"]), **options)
        part = part_of(images_part.shape[0])
        like = images_part.dtype  # float64 for the oracle
        return step.StepBatch(full.z[part].to(like), full.rows[part], full.cols[part],
                              *(getattr(full, f)[part].to(like)
                                for f in ("real", "real_coords", "fake_coords")))

    def fixed_gradient_penalty(critic, real, fake, generator=None, **options):
        """GP factors: this part's rows of one (B,) draw of this step."""
        alpha = torch.rand(batch, generator=torch.Generator().manual_seed(2000 + current["step"]))
        rng = torch.Generator().manual_seed(2000 + current["step"])
        torch.rand(part_of(real.shape[0]).start, generator=rng)  # skip the rows before ours
        check = rng.get_state()
        assert torch.equal(torch.rand(real.shape[0], generator=rng),
                           alpha[part_of(real.shape[0])]), "torch.rand draws are not sequential"
        rng.set_state(check)
        return gradient_penalty(critic, real, fake, generator=rng, **options)

    def frozen_batch_norm(x, mean, var, weight=None, bias=None, training=False,
                          momentum=0.1, eps=1e-5):
        return batch_norm(x, mean, var, weight, bias, False, momentum, eps)

    step.sample_step, losses.gradient_penalty = fixed_sample_step, fixed_gradient_penalty

    def build(dtype: torch.dtype = torch.float32) -> tuple[CocoGAN, step.Optimizers]:
        torch.manual_seed(3)
        model = CocoGAN(config.model).to(dtype)
        return model, step.build_optimizers(model, config)

    def record_gradients(optimizers: step.Optimizers, into: dict[str, torch.Tensor]) -> None:
        """Keep each optimiser's gradients as its step sees them (after any averaging)."""
        for name in ("d", "q", "g"):
            def hook(optimizer, args, kwargs, name=name):
                into[name] = torch.cat([p.grad.double().reshape(-1) for g in
                                        optimizer.param_groups for p in g["params"]])
            getattr(optimizers, name).register_step_pre_hook(hook)

    probe_z = torch.rand(4, config.model.z_dim, generator=torch.Generator().manual_seed(9)) * 2 - 1
    probe_pos = torch.tensor([0, 1, 0, 1])

    @torch.no_grad()
    def outputs(model: CocoGAN) -> torch.Tensor:
        """What the trained networks compute in eval mode: macro patches and critic scores."""
        model.eval()
        fake = generate_macro(model.generator, model.coords, probe_z, probe_pos, probe_pos.flip(0))
        coords = model.coords.macro_coords(probe_pos, probe_pos.flip(0))
        scores = model.discriminator.adversarial(model.discriminator.features(fake), coords)
        model.train()
        return torch.cat([fake.double().reshape(-1), scores.double().reshape(-1)])

    def relative(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    report: dict[str, list[dict[str, float]]] = {}
    for norm in ("sync", "per-rank", "frozen"):
        F.batch_norm = frozen_batch_norm if norm == "frozen" else batch_norm
        model, optimizers = build()
        if norm == "sync":
            synchronise_batch_norm(model.generator, world)
            synchronise_batch_norm(model.discriminator, world)
            optimizers = step.build_optimizers(model, config)
        average_gradients_before_step((optimizers.g, optimizers.d, optimizers.q), world)
        reference, ref_optimizers = build()
        exact, exact_optimizers = build(torch.float64)  # one process in float64: the oracle
        ours, theirs, truth = {}, {}, {}
        record_gradients(optimizers, ours)
        record_gradients(ref_optimizers, theirs)
        record_gradients(exact_optimizers, truth)
        report[norm] = []
        for current["step"] in range(steps):
            step.train_step(model, optimizers, images[local], config, torch.Generator())
            average_norm_statistics(dataclasses.replace(world, sync_norm=norm == "sync"), model)
            if rank == 0:
                step.train_step(reference, ref_optimizers, images, config,
                                torch.Generator())
                step.train_step(exact, exact_optimizers, images.double(), config,
                                torch.Generator())
                stats, ref_stats = (torch.cat([t.reshape(-1) for layer in tracked_norms(m)
                                               for t in (layer.running_mean, layer.running_var)])
                                    for m in (model, reference))
                report[norm].append({
                    **{f"grad_{k}": relative(ours[k], theirs[k]) for k in ("d", "q", "g")},
                    # float32 rounding of each against the float64 oracle
                    **{f"exact_{k}": relative(ours[k], truth[k]) for k in ("d", "q", "g")},
                    **{f"floor_{k}": relative(theirs[k], truth[k]) for k in ("d", "q", "g")},
                    "outputs": relative(outputs(model), outputs(reference)),
                    "bn_stats_max_abs": (stats - ref_stats).abs().max().item()})
    if rank == 0:
        (report_dir / "halves.json").write_text(json.dumps(report))
    shutdown(together=True)
    return 0


if __name__ == "__main__":
    mode, report = sys.argv[1], Path(sys.argv[2])
    if mode == "losses":
        sys.exit(reduce_losses(report))
    if mode == "cli":
        sys.exit(run_cli(report, Path(sys.argv[3]), sys.argv[sys.argv.index("--") + 1:]))
    sys.exit(run_halves(report, int(sys.argv[3]), sys.argv[4]))
