"""`cocogan train`: start a run from a preset or config on a folder or built-in dataset, or
resume one (`--resume RUN_DIR`). Stops cleanly on Ctrl-C / SIGTERM with a checkpoint. Under
`torchrun --nproc-per-node N` it trains data-parallel (docs/multi-gpu.md)."""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from cocogan.budget import check_budget, training_budget
from cocogan.checkpoint import read_metadata, resolve_checkpoint, resumable_steps, stored_config
from cocogan.config import Config, ConfigError, apply_overrides, read_config_file
from cocogan.presets import PRESETS, get_preset
from cocogan.training.datastream import resolve_workers
from cocogan.training.device import DEVICE_CHOICES, available_cores, select_device
from cocogan.training.distributed import BACKENDS, DEFAULT_TIMEOUT_S, World, stop_notice
from cocogan.training.loop import Trainer, TrainingDiverged
from cocogan.training.signals import StopFlag

# Flags that describe a new run; with --resume the run's own config.yaml and run.yaml decide.
_NEW_RUN_FLAGS = ("preset", "config", "out", "batch", "seed", "set", "extrapolate", "init_from",
                  "dry_run", "deterministic")


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="train a model (or resume a run)",
        description="Train COCO-GAN. New run: --preset NAME --data SRC --out RUN_DIR. "
                    "Continue one: --resume RUN_DIR [--steps N].")
    parser.add_argument("--preset", metavar="NAME",
                        help=f"named configuration: {', '.join(PRESETS)} (see `cocogan presets`)")
    parser.add_argument("--config", metavar="FILE.yaml", type=Path,
                        help="YAML config (sections model/train); overrides the preset's values")
    parser.add_argument("--data", metavar="SRC",
                        help="image folder (searched recursively; DIR::train / DIR::holdout for "
                             "one side of its fixed split) or builtin:blobs / builtin:skyline")
    parser.add_argument("--out", metavar="RUN_DIR", type=Path, help="new run directory")
    parser.add_argument("--resume", metavar="RUN_DIR", type=Path,
                        help="continue this run from its newest checkpoint")
    parser.add_argument("--steps", type=int, metavar="N",
                        help="total optimisation steps (optim.steps); with --resume, the new total")
    parser.add_argument("--batch", type=int, metavar="B", help="images per step (optim.batch)")
    parser.add_argument("--seed", type=int, metavar="S",
                        help="seed for weights, data order and latents (default 0)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, metavar="DEVICE",
                        help="auto (CUDA when available, default) | cpu | cuda")
    parser.add_argument("--set", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config values, e.g. --set optim.lr_d=2e-4 model.ngf=32")
    parser.add_argument("--extrapolate", type=int, metavar="K",
                        help="beyond-boundary fine-tune: sample K grid steps past each border "
                             "(loss.extrapolate); usually with --init-from")
    parser.add_argument("--init-from", metavar="RUN_OR_CKPT",
                        help="start from the weights of a trained run or .safetensors file")
    parser.add_argument("--deterministic", action="store_true",
                        help="CUDA: deterministic cuDNN and torch kernels, no autotuner "
                             "(run.deterministic; slower; docs/training.md)")
    parser.add_argument("--force", action="store_true",
                        help="train even if the up-front estimate says it will not fit in memory")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the config and data, write RUN_DIR/config.yaml, stop")
    parser.add_argument("--eval-every", type=int, metavar="K",
                        help="every K steps evaluate --eval-metrics on a subset (eval/<key> in "
                             "metrics.jsonl; checkpoints/best.safetensors by the first metric)")
    parser.add_argument("--eval-metrics", default="swd,seams,spatial", metavar="LIST",
                        help="metrics for --eval-every, from fid,kid,precision,recall,swd,seams,"
                             "wrap,spread,repeat,likeness,colour,spatial (always added: seams, the "
                             "layout metrics and, for panoramas, wrap)")
    parser.add_argument("--eval-n", type=int, metavar="N",
                        help="generated images per evaluation (default 1000)")
    parser.add_argument("--inception-weights", metavar="PATH",
                        help="FID Inception weights for fid/kid (default: as cocogan eval finds)")
    parser.add_argument("--dist-backend", choices=BACKENDS, default="auto", metavar="NAME",
                        help="under torchrun: auto (NCCL on GPUs, gloo on CPUs) | nccl | gloo")
    parser.add_argument("--dist-norm", choices=("sync", "per-rank"), default="sync",
                        help="under torchrun: batch-norm statistics over the global batch (sync, "
                             "default: as one process) or each rank's share (per-rank: cheaper)")
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                        help="under torchrun: seconds a rank waits for the others before it "
                             f"stops with an error (default {DEFAULT_TIMEOUT_S:g})")


def resolve_config(args: argparse.Namespace) -> Config:
    """Preset (or the --init-from checkpoint's config), then --config, --set and the flags."""
    if args.preset:
        data = get_preset(args.preset).to_dict()
    elif args.init_from:
        data = _checkpoint_config(args.init_from).to_dict()
    elif args.config:
        data = Config().to_dict()
    else:
        raise ConfigError("choose what to train: --preset NAME (see `cocogan presets`) or "
                          "--config FILE.yaml")
    if args.config:
        data = _merge(data, read_config_file(args.config, "--config"))  # bounded
    config = Config.from_dict(data)
    apply_overrides(config, [item for group in args.set for item in group])
    flags = {"steps": args.steps, "batch": args.batch, "extrapolate": args.extrapolate,
             "source": args.data, "deterministic": args.deterministic or None}
    for key, value in flags.items():
        if value is not None:
            setattr(config.section_of(key), key, value)
    return config.validate()


MAX_WORKERS_PER_CORE = 2  # data.num_workers above this many per usable core is refused


def check_resources(config: Config, force: bool, device: str | None) -> None:
    """Before anything is built: data.num_workers must be -1 or 0..2 per usable core (100,000
    workers once forked the machine to a load of 289), and the model's estimated memory must
    fit (skipped with --force). A disk that fills up later is reported at the failed write."""
    cores = available_cores()
    limit = max(4, MAX_WORKERS_PER_CORE * cores)
    if not -1 <= config.data.num_workers <= limit:
        raise ConfigError(f"data.num_workers must be -1 (automatic: min(4, cores - 1)) or 0 to "
                          f"{limit} ({MAX_WORKERS_PER_CORE} per usable CPU core, {cores} here), "
                          f"got {config.data.num_workers}")
    if force:
        return
    target = select_device(device or "auto")  # on a GPU the networks live there, not in RAM
    gpu = torch.cuda.get_device_properties(target).total_memory if target.type == "cuda" else None
    budget = training_budget(config.model, config.optim.batch, config.run.n_samples,
                             config.run.keep_checkpoints, resolve_workers(config.data.num_workers))
    print(check_budget(budget, None, fix="choose smaller model sizes (model.ngf, model.ndf, "
                       "model.z_dim, model.full_height/full_width) or optim.batch",
                       memory=gpu, memory_name="GPU memory" if gpu else "memory"))


def _checkpoint_config(path: str) -> Config:
    file = resolve_checkpoint(path)
    return stored_config(file, read_metadata(file))


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@contextlib.contextmanager
def plain_warnings(command: str, shown: bool = True) -> Iterator[None]:
    """Show warnings (skipped files, dataset mismatches) as one line each, no source lines
    (none at all when not ``shown``: ranks other than 0)."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        if shown:
            print(f"cocogan {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def check_flags(args: argparse.Namespace) -> None:
    """Boundary checks that name the flag."""
    if args.resume is not None:
        clashing = [f"--{f.replace('_', '-')}" for f in _NEW_RUN_FLAGS if getattr(args, f)]
        if clashing:
            raise ConfigError(f"--resume continues a run with its own config; drop "
                              f"{', '.join(clashing)} (allowed with it: --steps, --device, --data)")
        return
    if not args.data:
        raise ConfigError("--data is required: an image folder or builtin:blobs / builtin:skyline")
    if args.out is None:
        raise ConfigError("--out RUN_DIR is required (or --resume RUN_DIR)")
    for flag in ("steps", "batch"):
        if getattr(args, flag) is not None and getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ConfigError(f"--seed must be in 0..2^63-1, got {args.seed}")


def run(args: argparse.Namespace) -> int:
    """Single process, or one rank of a torchrun launch (rank 0 alone prints and writes)."""
    from cocogan.training import distributed
    from cocogan.training.run import read_run, release_locks

    check_flags(args)
    device = args.device or (read_run(args.resume)[1].device if args.resume else "auto")
    world = distributed.init(select_device(device), args.dist_backend, args.dist_timeout,
                             sync_norm=args.dist_norm == "sync")
    quiet = contextlib.nullcontext() if world.is_main else contextlib.redirect_stdout(io.StringIO())
    ended_normally = False
    try:
        with quiet, plain_warnings("train", shown=world.is_main):
            code = _run(args, world)
        ended_normally = True
        return code
    except distributed.PeerLost as error:
        print(f"cocogan train: error: {error}; {_after_peer_loss(args.resume or args.out)}",
              file=sys.stderr)
        return 1
    finally:
        release_locks()
        distributed.shutdown(together=ended_normally)


def _after_peer_loss(run_dir: Path | None) -> str:
    """The newest checkpoint's step to resume from after a peer was lost (no checkpoint is
    written then: it holds every rank's RNG state; docs/reliability.md)."""
    steps = resumable_steps(run_dir) if run_dir is not None and run_dir.is_dir() else []
    if not steps:
        return "no checkpoint was written (a checkpoint needs every process); start again"
    return (f"no checkpoint of the step in progress was written (a checkpoint needs every "
            f"process); the newest checkpoint is step {steps[-1]}: resume with: cocogan train "
            f"--resume {run_dir}")


def _run(args: argparse.Namespace, world: World) -> int:
    from cocogan.training.run import RunSpec, new_trainer, prepare_new_run, read_run, resume_trainer

    config, spec = read_run(args.resume) if args.resume else (resolve_config(args), None)
    if args.eval_every and config.model.family != "cocogan":
        raise ConfigError(f"--eval-every evaluates COCO-GAN runs, not model.family="
                          f"{config.model.family}: evaluate a baseline with "
                          "benchmarks/quality_baseline.py --evaluate-only")
    check_resources(config, args.force, args.device or (spec.device if spec else None))
    run_dir = args.resume or args.out
    if args.resume is not None:
        trainer, data_line = resume_trainer(args.resume, steps=args.steps, device=args.device,
                                            data=args.data, world=world)
        print(f"resuming {run_dir} at step {trainer.state.step}")
    else:
        spec = RunSpec(seed=args.seed or 0, device=args.device or "auto", init_from=args.init_from)
        dataset, data_line = prepare_new_run(run_dir, config, spec, world)
        print(f"wrote {run_dir / 'config.yaml'} (preset {config.name})")
        if args.dry_run:
            print(data_line)
            print("dry run: stopping before step 0")
            return 0
        trainer = new_trainer(run_dir, config, spec, dataset, world)
    if args.eval_every and world.is_main:  # the other ranks wait at the next collective
        from cocogan.evaluation import TRAINING_EVAL, EvalCallback, EvalHook

        metrics = with_seam_indicators(args.eval_metrics, trainer.config)
        settings = TRAINING_EVAL.with_n(args.eval_n) if args.eval_n else TRAINING_EVAL
        callback = EvalCallback(trainer.config, trainer.config.data.source, metrics,
                                every=args.eval_every, settings=settings, device=trainer.device,
                                inception_weights=args.inception_weights)
        trainer.hooks.append(EvalHook(callback, run_dir))
    return train(trainer, run_dir, data_line)


def with_seam_indicators(metrics: str, config: Config) -> str:
    """--eval-metrics plus seams, repeat, spread and likeness (and wrap for panoramas): cheap
    indicators of COCO-GAN's typical artefacts (patch borders, repeated tiles, one layout)."""
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    wanted = ["seams", "repeat", "spread", "likeness"]
    if config.model.coords == "cylindrical":
        wanted.append("wrap")
    return ",".join(names + [m for m in wanted if m not in names])


def train(trainer: Trainer, run_dir: Path, data_line: str) -> int:
    """Run ``trainer`` to its total under a stop flag; print how it ended; the exit code."""
    total = trainer.config.optim.steps
    print(data_line)
    count = torch.get_num_threads()
    threads = f" ({count} thread{'s' * (count > 1)})" if trainer.device.type == "cpu" else ""
    world = trainer.world
    ranks = (f"; {world.size} processes x {world.local_batch(trainer.config.optim.batch)} "
             "images per step" if world.enabled else "")
    print(f"device: {trainer.device}{threads}{ranks}; training steps {trainer.state.step} -> "
          f"{total}")
    if trainer.state.step >= total:
        trainer.close()
        print(f"{run_dir} is already at step {trainer.state.step} of {total}: pass --steps N "
              f"with N > {trainer.state.step} to train further")
        return 0

    def announce(name: str) -> None:
        trainer.notify(stop_notice(trainer.world, name, trainer.state.step + 1))

    with StopFlag(on_request=announce, repeat_window_s=2.0 * trainer.world.enabled) as stop:
        try:
            stopped = trainer.fit(stop)
        except TrainingDiverged as error:
            print(f"cocogan train: error: {error}", file=sys.stderr)
            return 1
    step = trainer.state.step
    if stopped:
        print(f"stopped at step {step} of {total} ({stopped}); checkpoint written. Resume with:"
              f" cocogan train --resume {run_dir}")
        return 130 if stopped == signal.SIGINT.name else 0
    print(f"done: {step} steps; checkpoints in {run_dir / 'checkpoints'}, samples in "
          f"{run_dir / 'samples'}")
    return 0
