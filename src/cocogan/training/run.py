"""Creating and resuming run directories, and building the Trainer for them.

A run directory holds ``config.yaml`` (the resolved Config with the package version, written
before step 0), ``run.yaml`` (seed, device, threads, the checkpoint a fine-tune started from;
runs before 2026-12 keep their data source there), ``checkpoints/``, ``metrics.jsonl``,
``tensorboard/`` and ``samples/``: all a resume needs. Every rank builds its Trainer here (same
checks, same weights); only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch.utils.data import Dataset

from cocogan.checkpoint import (
    CHECKPOINT_DIR,
    D_PREFIX,
    EMA_PREFIX,
    CheckpointError,
    checkpoint_paths,
    load_model,
    load_state,
    read_metadata,
    read_weights,
    resolve_checkpoint,
    resumable_steps,
    stored_config,
)
from cocogan.config import Config, ConfigError
from cocogan.data import DataError, build_dataset
from cocogan.data.cache import CachedImages, cache_bytes
from cocogan.model import GAN, build_model
from cocogan.nn.baseline import up_steps
from cocogan.outputs import atomic_write, check_folder, claim_folder, first_line
from cocogan.training.datastream import BatchStream, cache_device, resolve_workers
from cocogan.training.device import configure_threads, prepare_model, select_device
from cocogan.training.distributed import (
    SINGLE,
    World,
    agree_or_raise,
    average_gradients_before_step,
    broadcast_module,
)
from cocogan.training.family import family_of
from cocogan.training.logging import MetricsLog
from cocogan.training.loop import SampleGrid, Trainer
from cocogan.training.state import TrainState, restore_payload, seed_globals
from cocogan.training.step import NamedOptimizers
from cocogan.training.sync_norm import synchronise_batch_norm
from cocogan.version import __version__
from cocogan.yaml_limits import cut, read_bounded, read_yaml_file, show

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.yaml"
_LOCKS: dict[Path, int] = {}  # run folder -> the descriptor holding its flock


@dataclass
class RunSpec:
    """How a run is started besides its Config (stored in run.yaml)."""

    seed: int = 0  # fixes initial weights, data order, latents and sample z
    device: str = "auto"  # auto | cpu | cuda[:N]
    init_from: str | None = None  # weights a fine-tune started from (run dir or .safetensors)
    threads: int | None = None  # CPU threads, fixed per run: results depend on the count


def write_config(run_dir: Path, config: Config) -> None:
    """config.yaml: the resolved config with the package version (atomic)."""
    text = yaml.safe_dump({**config.to_dict(), "version": __version__}, sort_keys=False)
    atomic_write(Path(run_dir) / CONFIG_FILE, lambda tmp: tmp.write_text(text))


def write_run_spec(run_dir: Path, spec: RunSpec, **extra: object) -> None:
    fields = {**dataclasses.asdict(spec), **extra,
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    text = yaml.safe_dump(fields, sort_keys=False)
    atomic_write(Path(run_dir) / RUN_FILE, lambda tmp: tmp.write_text(text))


def lock_run(run_dir: Path, world: World = SINGLE, device: torch.device | None = None) -> None:
    """One ``cocogan train`` per run: rank 0 holds a ``flock`` on the folder until
    :func:`release_locks` or its exit (even a SIGKILL releases it); every rank stops with a
    refusal."""
    refusal = None
    key = Path(run_dir).resolve()
    if world.is_main and key not in _LOCKS:
        handle = os.open(key, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _LOCKS[key] = handle
        except OSError:
            os.close(handle)
            refusal = ConfigError(f"{run_dir} is being trained by another cocogan train right "
                                  "now (it holds the run's lock): let it finish or stop it, "
                                  f"then cocogan train --resume {run_dir}")
    agree_or_raise(world, refusal, device or torch.device("cpu"), "locking the run")


def release_locks() -> None:
    """End of a training in this process: another may train its runs now."""
    while _LOCKS:
        os.close(_LOCKS.popitem()[1])  # closing the descriptor releases its flock


def read_run(run_dir: Path) -> tuple[Config, RunSpec]:
    """Config and RunSpec of an existing run directory."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / RUN_FILE).is_file():
        raise CheckpointError(f"{run_dir} is not a cocogan run directory (no {CONFIG_FILE} and "
                              f"{RUN_FILE}); pass the --out folder of a cocogan train run")
    try:  # both files are size-checked before they are read
        config = Config.from_yaml(read_bounded(run_dir / CONFIG_FILE, "the run's")).validate()
    except (yaml.YAMLError, ConfigError) as error:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} is unusable ({first_line(error)}): "
                              "restore it from a backup or start a new run") from None
    try:
        raw = read_yaml_file(run_dir / RUN_FILE, "the run's") or {}
    except (yaml.YAMLError, ConfigError) as error:
        raw = first_line(error)
    names = {f.name for f in dataclasses.fields(RunSpec)}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{run_dir / RUN_FILE} is corrupt ({cut(str(raw), 300)}): it "
                              "should be a mapping with seed and device; restore it or rewrite "
                              "those keys by hand")
    spec = RunSpec(**{k: v for k, v in raw.items() if k in names})
    if config.data.source is None:  # a run from before data.source: run.yaml has it
        config.data.source = raw.get("data")
    if not isinstance(config.data.source, str) or not isinstance(spec.seed, int):
        raise CheckpointError(f"{run_dir / RUN_FILE} is invalid: data must be a string and seed "
                              f"an integer, got data={show(config.data.source)}, "
                              f"seed={show(spec.seed)}")
    return config, spec


def open_dataset(config: Config, seed: int) -> Dataset[torch.Tensor]:
    """The images of ``data.source`` at the model's full size (DataError before training)."""
    model = config.model
    if not config.data.source:
        raise ConfigError("no data source: pass --data (a folder or builtin:NAME)")
    return build_dataset(config.data.source, model.full_height, model.full_width,
                         cylindrical=model.coords == "cylindrical",
                         celeba_crop=config.data.celeba_crop, seed=seed,
                         resample=config.data.resample)


def describe_dataset(dataset: Dataset[torch.Tensor], data: str) -> str:
    skipped = len(getattr(dataset, "skipped", []))
    note = f" ({skipped} unreadable file(s) skipped)" if skipped else ""
    return f"data: {data}: {len(dataset)} images{note}"  # type: ignore[arg-type]


def prepare_new_run(run_dir: Path, config: Config, spec: RunSpec, world: World = SINGLE
                    ) -> tuple[Dataset[torch.Tensor], str]:
    """Check the output folder and the data, then (rank 0) write config.yaml and run.yaml;
    returns the dataset and a one-line description of it."""
    run_dir = Path(run_dir)
    device = world.place(select_device(spec.device))  # a missing GPU fails before any write
    try:
        dataset = _check_new_run(run_dir, config, spec, world, device)
        refusal: Exception | None = None
    except (ConfigError, DataError, CheckpointError) as error:
        refusal, dataset = error, None
    # Rank 0 writes only after every rank has checked the folder (else a peer sees rank 0's
    # files as the user's), and a check failing on one rank fails all (none waits forever).
    agree_or_raise(world, refusal, device, "the start-up checks")
    assert dataset is not None
    if not world.is_main:
        return dataset, describe_dataset(dataset, config.data.source)
    claim_folder(run_dir, "--out", run=True)  # the run marker identifies it
    lock_run(run_dir)
    write_config(run_dir, config)
    skipped = len(getattr(dataset, "skipped", []))
    write_run_spec(run_dir, spec, images=len(dataset), skipped_files=skipped)  # type: ignore
    return dataset, describe_dataset(dataset, config.data.source)


def _check_new_run(run_dir: Path, config: Config, spec: RunSpec, world: World,
                   device: torch.device) -> Dataset[torch.Tensor]:
    """Everything a new run must pass before a file is written; returns the dataset."""
    if resumable_steps(run_dir) or any((run_dir / CHECKPOINT_DIR).glob("step-*")):
        raise ConfigError(f"{run_dir} already holds a run with checkpoints: continue it with "
                          f"`cocogan train --resume {run_dir}` or choose another --out")
    check_folder(run_dir, "--out")  # never write into a folder of the user's own files
    config.validate()
    world.local_batch(config.optim.batch)
    if config.model.family == "baseline":
        try:
            up_steps(config.model.full_height, config.model.full_width)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if device.type == "cpu":
        spec.threads = configure_threads(device, spec.threads)
    if spec.init_from:
        _check_init_from(spec.init_from, config)
    dataset = open_dataset(config, spec.seed)
    if len(dataset) < config.optim.batch:  # type: ignore[arg-type]
        raise DataError(f"{config.data.source} has {len(dataset)} usable images, fewer than "
                        f"one batch of {config.optim.batch}: lower --batch or add images")
    return dataset


def _check_init_from(source: str, config: Config) -> None:
    """--init-from must be a checkpoint of the same model config."""
    file = resolve_checkpoint(source)
    saved = stored_config(file, read_metadata(file)).model
    if saved != config.model:
        changed = [f"model.{k}" for k, v in dataclasses.asdict(saved).items()
                   if getattr(config.model, k) != v]
        raise CheckpointError(f"--init-from {source} was trained with another model config "
                              f"({', '.join(changed)} differ): use the preset it was trained "
                              "with, or leave --preset out to take its config")


def _warm_start(model: GAN, source: str, config: Config) -> None:
    """Load ``source``'s weights into ``model``. An inference-only file (a shipped model, an
    export) starts G from its EMA generator, and D from its D where it has one, else from the
    seeded initialisation (stderr says so); the optimisers always start fresh."""
    state = load_model(source, "cpu", family=config.model.family)[1].state_dict()
    if not any(name.startswith("generator.") for name in state):
        state |= {"generator." + name.removeprefix(EMA_PREFIX): tensor
                  for name, tensor in state.items() if name.startswith(EMA_PREFIX)}
        if not any(name.startswith(D_PREFIX) for name in state):
            state |= {D_PREFIX + k: v for k, v in model.discriminator.state_dict().items()}
            print(f"--init-from {source} holds no discriminator: D starts from its seeded "
                  "initialisation, G and its EMA from the file's EMA generator", file=sys.stderr)
    model.load_state_dict(state)


def cache_dataset(dataset: Dataset[torch.Tensor], config: Config,
                  device: torch.device) -> Dataset[torch.Tensor]:
    """The dataset decoded once into memory when it fits ``data.cache_max_mb`` (stderr says
    where and how big); otherwise ``dataset`` itself."""
    model = config.model
    where = cache_device(dataset, config.data.cache_max_mb, model.full_height, model.full_width,
                         device)
    if where is None:
        return dataset
    size = cache_bytes(dataset, model.full_height, model.full_width) / 2**20
    count = len(dataset)  # type: ignore[arg-type]
    print(f"caching {count} decoded images ({size:.0f} MB, uint8) on {where}; "
          "--set data.cache_max_mb=0 to decode every epoch instead", file=sys.stderr)
    return CachedImages.decode(dataset, model.full_height, model.full_width,
                               num_workers=resolve_workers(config.data.num_workers), device=where)


def _trainer(run_dir: Path, config: Config, model: GAN, optimizers: NamedOptimizers,
             state: TrainState, dataset: Dataset[torch.Tensor], seed: int, start_batch: int,
             world: World, warm_start: bool = False) -> Trainer:
    """Shared assembly of new and resumed trainers (model already on its device)."""
    device = model.device
    dataset = cache_dataset(dataset, config, device)
    world.local_batch(config.optim.batch)
    stream = BatchStream(dataset, config.optim.batch, seed, start=start_batch,
                         num_workers=config.data.num_workers, device=device,
                         shard=(world.rank, world.size))
    if world.enabled:
        broadcast_module(world, model)
        average_gradients_before_step(tuple(optimizers.named().values()), world)
    return Trainer(run_dir=Path(run_dir), config=config, model=model, optimizers=optimizers,
                   state=state, stream=stream,
                   log=MetricsLog(run_dir, state.step, quiet=not world.is_main),
                   hooks=[SampleGrid(config.run.sample_every)],
                   amp=config.run.amp and device.type == "cuda", world=world, warm_start=warm_start)


def _place(model: GAN, config: Config, device: torch.device, world: World
           ) -> NamedOptimizers:
    """Move the model, synchronise its batch norms, apply the speed options; returns the
    optimisers (built last, over the final parameters)."""
    model.to(device)
    if world.enabled and world.sync_norm:  # the EMA generator only runs in eval mode
        synchronise_batch_norm(model.generator, world)
        synchronise_batch_norm(model.discriminator, world)
    prepare_model(model, config)
    return family_of(config.model).build_optimizers(model, config)


def new_trainer(run_dir: Path, config: Config, spec: RunSpec,
                dataset: Dataset[torch.Tensor], world: World = SINGLE) -> Trainer:
    """A Trainer at step 0 (after :func:`prepare_new_run`); ``spec.init_from`` loads weights."""
    device = world.place(select_device(spec.device))
    configure_threads(device, spec.threads)
    seed_globals(spec.seed)  # initial weights follow the seed
    model = build_model(config.model)
    if spec.init_from:
        _check_init_from(spec.init_from, config)
        _warm_start(model, spec.init_from, config)
    optimizers = _place(model, config, device, world)
    state = TrainState.fresh(spec.seed, config.run.n_samples, config.model.z_dim, device,
                             rank=world.rank)
    return _trainer(run_dir, config, model, optimizers, state, dataset, spec.seed, 0, world,
                    warm_start=bool(spec.init_from))


def resume_trainer(run_dir: Path, *, steps: int | None = None, device: str | None = None,
                   data: str | None = None, world: World = SINGLE) -> tuple[Trainer, str]:
    """A Trainer continuing a run from its newest complete checkpoint, and a line about its
    data. ``steps``: a new total (extends a finished run); ``device`` and ``data`` (a moved
    folder; the order stays seeded) override run.yaml's; any process count resumes any run."""
    run_dir = Path(run_dir)
    config, spec = read_run(run_dir)
    steps_done = resumable_steps(run_dir)
    if not steps_done:
        raise CheckpointError(f"{run_dir} has no complete checkpoint to resume from (no "
                              f"{CHECKPOINT_DIR}/step-*.safetensors with its .state.pt)")
    if steps is not None:
        if steps < steps_done[-1]:
            raise ConfigError(f"--steps {steps} is below the step of {run_dir}'s newest "
                              f"checkpoint ({steps_done[-1]}); pass a larger total")
        config.optim.steps = steps
        config.validate()
    target = world.place(select_device(device or spec.device))
    lock_run(run_dir, world, target)
    if world.is_main:  # a run from before markers (its checkpoints say so) gets one
        claim_folder(run_dir, "--resume", run=True)
    configure_threads(target, spec.threads)
    weights, state_file = checkpoint_paths(run_dir, steps_done[-1])
    model = build_model(config.model)
    step = read_weights(weights, config, model)
    payload = load_state(state_file)
    optimizers = _place(model, config, target, world)
    state = restore_payload(payload, optimizers, step, target, rank=world.rank, seed=spec.seed)
    config.data.source = data or config.data.source
    dataset = open_dataset(config, spec.seed)
    start_batch = int(payload.get("data", {}).get("batches", step))
    trainer = _trainer(run_dir, config, model, optimizers, state, dataset, spec.seed,
                       start_batch, world, warm_start=bool(spec.init_from))
    if steps is not None and world.is_main:
        write_config(run_dir, config)
    return trainer, describe_dataset(dataset, config.data.source)
