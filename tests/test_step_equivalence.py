"""The fast training step computes what the plain eager step computes (CPU reference tests).

- channels-last tensors, and (``--runslow``: about a minute of compiling here) a compiled G and D
  trunk, give the plain step's losses and weights, including the gradient penalty's double
  backward, over several steps;
- ``sn_once`` (one spectral-norm power iteration per D update) equals the plain step where the
  power iteration has converged (its fixed point: further iterations change nothing);
- the uint8 image cache returns the decoded images bit for bit, in the stream's order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocogan import CocoGAN, get_preset
from cocogan.config import Config
from cocogan.data import ImageFolderDataset
from cocogan.data.cache import CachedImages
from cocogan.training.datastream import BatchStream
from cocogan.training.device import prepare_model
from cocogan.training.logging import MetricsLog
from cocogan.training.loop import update_ema
from cocogan.training.state import restore_step_generator, step_generator
from cocogan.training.step import build_optimizers, train_step

# In float64: other conv kernels (NHWC) and fused graphs reorder sums, and in float32 Adam's
# first steps (update ~ lr * sign(g)) turn rounding noise on near-zero gradients into whole
# lr-sized steps. In float64 losses agree to ~1e-12; weights to ~1e-8, the worst being biases
# followed by batch norm, whose true gradient is 0 (their rounding noise / Adam's eps).
LOSS_RTOL, WEIGHT_ATOL = 1e-9, 1e-7
CHANNELS_LAST_ATOL = 1e-5
STEPS = 3


@pytest.fixture(autouse=True)
def _float64_one_thread() -> Iterator[None]:
    previous = torch.get_num_threads(), torch.get_default_dtype()
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_num_threads(previous[0])
    torch.set_default_dtype(previous[1])


def tiny_config(**train: object) -> Config:
    config = get_preset("tiny")
    config.model.ngf = config.model.ndf = 8
    config.model.z_dim, config.model.aux_hidden = 8, 16
    config.loss.w_content = 1.0  # every loss term reaches every network
    for key, value in train.items():
        setattr(config.section_of(key), key, value)
    return config


def run_steps(config: Config, *, sn_once: bool = False, converge_sn: bool = False,
              steps: int = STEPS) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    """Losses of each step and the final weights of a seeded model trained ``steps`` steps."""
    torch.manual_seed(0)
    model = prepare_model(CocoGAN(config.model), config)
    if converge_sn:
        converge_power_iteration(model)
    optimizers = build_optimizers(model, config)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    if config.run.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    rng = step_generator("cpu").manual_seed(2)
    history = []
    for step in range(steps):
        losses = train_step(model, optimizers, images, config, rng, sn_once=sn_once)
        update_ema(model, step, 0.9, 1)
        history.append({name: value.item() for name, value in losses.items()})
    return history, {k: v.detach().clone() for k, v in model.state_dict().items()}


def converge_power_iteration(model: CocoGAN, iterations: int = 500) -> None:
    """Run the spectral-norm power iterations of all of D (trunk, score, projection, heads) to
    their fixed point (u, v: the top singular pair)."""
    x, coords = torch.zeros(2, 3, 16, 16), torch.zeros(2, 2)
    with torch.no_grad():
        for _ in range(iterations):
            model.discriminator(x, coords)


def assert_same(a: tuple, b: tuple, *, rtol: float = LOSS_RTOL, atol: float = WEIGHT_ATOL
                ) -> None:
    (losses_a, weights_a), (losses_b, weights_b) = a, b
    for step, (la, lb) in enumerate(zip(losses_a, losses_b, strict=True)):
        for name in la:
            assert la[name] == pytest.approx(lb[name], rel=rtol, abs=1e-6), (step, name)
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        torch.testing.assert_close(weights_a[key], weights_b[key], rtol=0, atol=atol,
                                   msg=lambda m, key=key: f"{key}: {m}")


def max_weight_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize("sn_once", [False, True])
def test_channels_last_step_equals_the_plain_step(sn_once: bool) -> None:
    plain = run_steps(tiny_config(), sn_once=sn_once)
    fast = run_steps(tiny_config(channels_last=True), sn_once=sn_once)
    # Kernel-order rounding (float64) reaches the losses at ~1e-7 relative within 3 steps, as
    # Adam's first updates turn near-zero gradients into whole steps; hence 1e-6 / 1e-5.
    assert_same(fast, plain, rtol=1e-6, atol=CHANNELS_LAST_ATOL)
    # The tolerance is tight enough to see the penalty's double backward: without L_GP the
    # weights move by far more than it.
    no_gp = run_steps(tiny_config(w_gp=0.0), sn_once=sn_once)
    assert max_weight_difference(no_gp[1], plain[1]) > 10 * CHANNELS_LAST_ATOL
    assert plain[0][0]["L_GP"] > 1e-3


def test_sn_once_equals_the_plain_step_at_the_power_iteration_fixed_point() -> None:
    # One step: the update moves D's weights, so later steps start off the fixed point again.
    plain = run_steps(tiny_config(), converge_sn=True, steps=1)
    once = run_steps(tiny_config(), sn_once=True, converge_sn=True, steps=1)
    assert_same(once, plain, rtol=1e-6, atol=1e-5)  # u converged to ~1e-7, not exactly
    # Away from the fixed point the option does change the estimate: it is an option.
    fresh_plain, fresh_once = run_steps(tiny_config(), steps=1), run_steps(
        tiny_config(), sn_once=True, steps=1)
    assert fresh_plain[0][0]["L_W"] != fresh_once[0][0]["L_W"]


def test_sn_once_runs_one_power_iteration_per_d_update() -> None:
    config = tiny_config()
    torch.manual_seed(0)
    model = CocoGAN(config.model)
    reference = copy.deepcopy(model)
    optimizers = build_optimizers(model, config)
    train_step(model, optimizers, torch.rand(4, 3, 32, 32) * 2 - 1, config,
               torch.Generator().manual_seed(0), sn_once=True)
    # D's trunk ran its power iteration in the D update (once) and not in the G update (D's
    # state is frozen there): the same u as one no-grad forward pass of an untouched copy.
    with torch.no_grad():
        reference.discriminator.features(torch.zeros(1, 3, 16, 16))
    name = "blocks.0.conv1.parametrizations.weight.0._u"
    got = dict(model.discriminator.named_buffers())[name]
    want = dict(reference.discriminator.named_buffers())[name]
    # D's weights changed in between, so u is close to, not equal to, the untouched copy's.
    assert torch.allclose(got, want, atol=0.05)
    three = copy.deepcopy(reference)
    with torch.no_grad():
        for _ in range(2):  # a plain step would run 3 iterations in all
            three.discriminator.features(torch.zeros(1, 3, 16, 16))
    assert (got - want).abs().max() < (got - dict(three.discriminator.named_buffers())[name]
                                       ).abs().max()


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "sn_once"), [("aot_eager", False), ("aot_eager", True),
                                                  (None, True)])
def test_compiled_step_equals_the_plain_step(backend: str | None, sn_once: bool,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled G and D trunk with channels-last tensors. The ``aot_eager`` backend (a test
    hook, not a user option) is the graph capture and AOTAutograd of every backend without
    code generation; None is inductor's ``default`` mode (minutes to compile on a CPU). The
    penalty's double backward runs the eager trunk."""
    from cocogan.training import device

    monkeypatch.setattr(device, "_BACKEND", backend)
    fast = run_steps(tiny_config(channels_last=True, compile="default"), sn_once=sn_once)
    # channels-last tensors: the same kernel-order rounding, hence the same tolerance (measured:
    # 8e-8 relative in a loss, 1.5e-7 in a weight after 3 steps)
    assert_same(fast, run_steps(tiny_config(), sn_once=sn_once), rtol=1e-6,
                atol=CHANNELS_LAST_ATOL)


def test_losses_stay_on_device_until_a_record_is_written(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, 0, tensorboard=False)
    log.accumulate({"L_W": torch.tensor(1.0), "L_GP": torch.tensor(2.0)}, step=1)
    log.accumulate({"L_W": torch.tensor(3.0), "L_GP": torch.tensor(float("inf"))}, step=2)
    log.accumulate({"L_W": torch.tensor(float("nan")), "L_GP": torch.tensor(0.0)}, step=3)
    assert log.first_non_finite() == ("L_GP", 2)
    log.data_wait = 0.0
    record = log.write(3, 4, {}, 1.0)
    assert np.isnan(record["L_W"]) and record["L_GP"] == float("inf")
    assert 0.0 <= record["data_wait_fraction"] <= 1.0
    log.close()


def test_step_generator_resumes_its_stream_and_survives_a_device_change() -> None:
    rng = step_generator("cpu").manual_seed(5)
    saved = rng.get_state()
    expected = torch.rand(3, generator=rng)
    assert torch.equal(torch.rand(3, generator=restore_step_generator(saved, "cpu")), expected)
    cuda_like = torch.arange(16, dtype=torch.uint8)  # a Philox state: (seed, offset) bytes
    first = torch.rand(3, generator=restore_step_generator(cuda_like, "cpu"))
    assert torch.equal(first, torch.rand(3, generator=restore_step_generator(cuda_like, "cpu")))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Twelve 40x48 RGB images (resized to 32x32 on decoding)."""
    rng = np.random.default_rng(0)
    for index in range(12):
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{index:02d}.png")
    return tmp_path


def test_cache_holds_the_decoded_images_bit_for_bit(folder: Path) -> None:
    dataset = ImageFolderDataset(folder, 32, 32)
    cached = CachedImages.decode(dataset, 32, 32)
    assert cached.images.dtype == torch.uint8 and cached.images.shape == (12, 3, 32, 32)
    for index in range(len(dataset)):
        assert torch.equal(cached[index], dataset[index])


def test_cached_stream_gives_the_loaders_batches_and_resumes(folder: Path) -> None:
    dataset = ImageFolderDataset(folder, 32, 32)
    cached = CachedImages.decode(dataset, 32, 32)
    plain = BatchStream(dataset, 5, seed=3, num_workers=0)
    fast = BatchStream(cached, 5, seed=3, num_workers=0)
    batches = [next(plain) for _ in range(5)]  # 2 batches per epoch: crosses two epochs
    for batch in batches:
        assert torch.equal(next(fast), batch)
    resumed = BatchStream(cached, 5, seed=3, start=3, num_workers=0)
    assert torch.equal(next(resumed), batches[3])
    assert fast.position == plain.position


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_steady_state_step_never_waits_for_the_host(folder: Path) -> None:
    """A step, its batch from a device cache and its loss log make no synchronising call."""
    torch.set_default_dtype(torch.float32)
    config = tiny_config(sn_once=True, channels_last=True)
    device = torch.device("cuda")
    model = prepare_model(CocoGAN(config.model).to(device), config)
    optimizers = build_optimizers(model, config)
    cached = CachedImages.decode(ImageFolderDataset(folder, 32, 32), 32, 32, device=device)
    stream = BatchStream(cached, 4, seed=0, num_workers=0, device=device)
    rng = step_generator(device).manual_seed(0)
    log = MetricsLog(folder, 0, tensorboard=False)

    def step(index: int) -> None:
        images = next(stream).contiguous(memory_format=torch.channels_last)
        losses = train_step(model, optimizers, images, config, rng, amp=True,
                            sn_once=True)
        update_ema(model, index, 0.999, 1)
        log.accumulate(losses, index)

    for index in range(1, 3):  # first steps allocate, autotune and create the log's sums
        step(index)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for index in range(3, 6):
            step(index)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert log.first_non_finite() is None
    log.close()
