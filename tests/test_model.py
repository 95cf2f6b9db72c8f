"""Networks, losses, the training step and configuration errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cocogan import (
    PRESETS,
    CocoGAN,
    Config,
    ConfigError,
    ModelConfig,
    apply_overrides,
    generate_macro,
    get_preset,
    gradient_penalty,
)
from cocogan.nn import Discriminator, Generator, generator_plan
from cocogan.summary import parameter_counts
from cocogan.training.loop import update_ema
from cocogan.training.step import build_optimizers, train_step
from cocogan.variants.heading import HeadingGenerator
from cocogan.variants.seamless import SeamlessGenerator


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_with_right_shapes(name: str) -> None:
    config = get_preset(name)
    m = config.model
    dim = 3 if m.coords == "cylindrical" else 2
    small = copy.deepcopy(m)
    small.ngf = small.ndf = 4  # same topology, cheap to run
    generator = Generator(m.z_dim, dim, m.micro, small.ngf).eval()
    z = torch.rand(2, m.z_dim) * 2 - 1
    coords = torch.rand(2, dim) * 2 - 1
    patch = generator(z, coords)
    assert patch.shape == (2, 3, m.micro, m.micro)
    assert patch.min() >= -1 and patch.max() <= 1
    disc = Discriminator(dim, m.z_dim, m.macro, small.ndf, 16).eval()
    score, position, latent = disc(torch.rand(2, 3, m.macro, m.macro_w), coords)
    rows_only = 1 if dim == 3 else dim  # the cylinder's head predicts y alone (N1)
    assert score.shape == (2,) and position.shape == (2, rows_only) and latent.shape == (2, m.z_dim)


# The authors' release, as docs/reference-notes.md records it: D's channel multipliers by macro
# size, and each config's g_extra_layers (G blocks without up-sampling beyond log2(micro) - 1).
RELEASE_D_WIDTHS = {32: [1, 4, 8, 8], 64: [1, 2, 4, 8, 8], 128: [1, 1, 2, 4, 8, 8],
                    512: [1, 1, 1, 1, 2, 4, 8, 8]}
RELEASE_G_EXTRA = {"celeba128-micro8": 1, "celeba128-micro4": 3}
PAPER_PRESETS = [n for n in PRESETS if not n.startswith(("tiny", "small"))]


def release_counts(name: str) -> dict[str, int]:
    """Parameters of the release's G, D (trunk, score, projection) and heads for a preset,
    counted from its recipe: G = SN-linear stem to 2x2x16 ngf, blocks of widths
    [8, 4, 2] + [1] * (n - 3) ngf each with two CBNs (gamma and beta: linear layers of the
    condition) and three convs, then BN and a 3x3 conv to RGB; D = residual down-blocks of
    three convs, a linear score, and the coordinate projection (counted without its bias,
    which the score's weight absorbs)."""
    m = get_preset(name).model
    ngf, ndf, hidden = m.ngf, m.ndf, m.aux_hidden
    coord = 3 if m.coords == "cylindrical" else 2
    cond = m.z_dim + coord
    blocks = int(math.log2(m.micro)) - 1 + RELEASE_G_EXTRA.get(name, 0)
    widths = [8 * ngf, 4 * ngf, 2 * ngf] + [ngf] * (blocks - 3)
    g, cin = cond * 4 * 16 * ngf + 4 * 16 * ngf, 16 * ngf
    for cout in widths:
        cbn = 2 * (cond * cin + cin) + 2 * (cond * cout + cout)
        g += cbn + (9 * cin * cout + cout) + (9 * cout * cout + cout) + (cin * cout + cout)
        cin = cout
    g += 2 * cin + 27 * cin + 3
    d, cin = 0, 3
    for w in (k * ndf for k in RELEASE_D_WIDTHS[m.macro]):
        d += (9 * cin * w + w) + (9 * w * w + w) + (cin * w + w)
        cin = w
    d += (cin + 1) + coord * cin

    def head(out: int) -> int:
        return cin * hidden + hidden + 2 * hidden + hidden * out + out

    # Deviation (review N1): on the cylinder the release's head also outputs (cos, sin), which
    # no loss trains; ours predicts y alone (docs/design.md, "Deviations").
    spatial_out = 1 if m.coords == "cylindrical" else coord
    return {"g_params": g, "d_params": d, "spatial_head_params": head(spatial_out),
            "q_params": head(m.z_dim)}


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_parameter_counts_match_the_release(name: str) -> None:
    """N2: every paper preset builds the release's networks, counted from its recipe."""
    assert parameter_counts(get_preset(name)) == release_counts(name)


def test_release_recipe_gives_the_reviewed_micro4_generator() -> None:
    """The review's figure for the release's N16M16S64 G (4 blocks, 64-channel tail)."""
    assert release_counts("celeba128-micro4")["g_params"] == 11_392_515
    assert [cout for _, cout, _ in generator_plan(4, 64)] == [512, 256, 128, 64]


@pytest.mark.parametrize("name", ["tiny-panorama", "small64", "celeba64"])
def test_shape_only_counts_equal_the_real_networks(name: str) -> None:
    """`cocogan presets` counts on shape-only networks (meta tensors, no spectral norm): the
    same numbers as the networks training builds, which stay spectrally normalised after."""
    config = get_preset(name)
    model = CocoGAN(config.model)
    real = {"g_params": sum(p.numel() for p in model.generator.parameters()),
            "d_params": sum(p.numel() for p in model.discriminator.parameters())}
    counts = parameter_counts(config)
    assert counts["g_params"] == real["g_params"]
    heads = counts["spatial_head_params"] + counts["q_params"]
    assert counts["d_params"] + heads == real["d_params"]
    assert hasattr(CocoGAN(get_preset("tiny").model).generator.blocks[0].conv1,
                   "parametrizations")

def test_coordinate_changes_generator_output() -> None:
    generator = Generator(8, 2, 8, ngf=8).eval()
    z = torch.rand(1, 8).repeat(2, 1)
    out = generator(z, torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    assert (out[0] - out[1]).abs().max() > 1e-4


def test_spectral_norm_top_singular_value_is_one() -> None:
    generator = Generator(8, 2, 8, ngf=8)
    generator.train()
    for _ in range(30):  # power iterations run in training-mode forwards
        generator(torch.rand(4, 8), torch.rand(4, 2))
    conv = generator.blocks[0].conv1
    weight = conv.weight.detach().reshape(conv.weight.shape[0], -1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.05)
    raw = conv.parametrizations.weight.original.detach().reshape(weight.shape[0], -1)
    assert torch.linalg.matrix_norm(raw, ord=2).item() != pytest.approx(1.0, abs=0.05)


def test_conditional_batch_norm_is_eq5_with_var_plus_eps() -> None:
    """CBN (eq. 5) is (x - mu) / sqrt(var + eps) * gamma(y) + beta(y) with batch statistics
    (biased variance) in training, running ones in eval; gamma's bias starts at 1, beta's at 0."""
    from cocogan.nn.layers import ConditionalBatchNorm

    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(3, 5).train()
    x, y = torch.randn(6, 3, 4, 4) * 3 + 2, torch.randn(6, 5)
    gamma, beta = cbn.gamma(y)[:, :, None, None], cbn.beta(y)[:, :, None, None]
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * gamma + beta
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)
    assert torch.equal(cbn.gamma.bias, torch.ones(3)) and torch.equal(cbn.beta.bias, torch.zeros(3))
    cbn.eval()
    running = cbn.norm.running_mean[None, :, None, None], cbn.norm.running_var[None, :, None, None]
    expected = (x - running[0]) / torch.sqrt(running[1] + 1e-5) * gamma + beta
    assert torch.allclose(cbn(x, y), expected, atol=1e-5)


def test_gradient_penalty_matches_independent_computation() -> None:
    torch.manual_seed(1)
    weight = torch.randn(3 * 4 * 4)

    def critic(x: torch.Tensor) -> torch.Tensor:  # gradient is known in closed form
        flat = x.flatten(1)
        return (flat @ weight) + 0.5 * (flat ** 2).sum(1)

    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    rng = torch.Generator().manual_seed(7)
    value = gradient_penalty(critic, real, fake, generator=rng)
    alpha = torch.rand(5, 1, 1, 1, generator=torch.Generator().manual_seed(7))
    mixed = alpha * real + (1 - alpha) * fake
    grad = weight + mixed.flatten(1)  # d/dx of w.x + |x|^2 / 2
    expected = ((grad.norm(dim=1) - 1) ** 2).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def _tiny_setup(seed: int = 0, **train: float) -> tuple:
    torch.manual_seed(seed)
    config = get_preset("tiny")
    for key, value in train.items():
        setattr(config.section_of(key), key, value)
    model = CocoGAN(config.model)
    return config, model, build_optimizers(model, config)


def test_train_step_updates_g_d_and_q_with_finite_losses() -> None:
    config, model, optimizers = _tiny_setup(w_content=1.0)
    before = copy.deepcopy(model.state_dict())
    images = torch.rand(8, 3, 32, 32) * 2 - 1
    losses = train_step(model, optimizers, images, config, torch.Generator().manual_seed(0))
    assert set(losses) >= {"L_W", "L_GP", "L_S_real", "L_S_fake", "L_C", "loss_D", "loss_G"}
    assert all(torch.isfinite(v) for v in losses.values())
    after = model.state_dict()
    for prefix in ("generator.", "discriminator.blocks", "discriminator.spatial",
                   "discriminator.content"):
        keys = [k for k in after if k.startswith(prefix) and k.endswith("original")]
        assert keys and any(not torch.equal(before[k], after[k]) for k in keys), prefix


def test_same_seed_same_result() -> None:
    results = []
    for _ in range(2):
        config, model, optimizers = _tiny_setup(seed=3)
        images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
        rng = torch.Generator().manual_seed(11)
        for _ in range(2):
            losses = train_step(model, optimizers, images, config, rng)
        results.append(({k: v.item() for k, v in losses.items()},
                        model.generator.stem.parametrizations.weight.original.clone()))
    assert results[0][0] == results[1][0]
    assert torch.equal(results[0][1], results[1][1])


def test_cylindrical_train_step_and_macro_generation() -> None:
    torch.manual_seed(0)
    config = get_preset("tiny-panorama")
    model = CocoGAN(config.model)
    optimizers = build_optimizers(model, config)
    losses = train_step(model, optimizers, torch.rand(4, 3, 32, 96) * 2 - 1, config,
                        torch.Generator().manual_seed(0))
    assert all(torch.isfinite(v) for v in losses.values())
    macro = generate_macro(model.generator_ema, model.coords, model.sample_z(2),
                           torch.tensor([0.0, 3.0]), torch.tensor([11.0, 5.0]))
    assert macro.shape == (2, 3, config.model.macro, config.model.macro_w)  # 16 x 48


def test_ema_tracks_generator() -> None:
    _, model, _ = _tiny_setup()
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)
    update_ema(model, step=1000, decay=0.5, warmup=0)
    live = model.generator.stem.parametrizations.weight.original
    ema = model.generator_ema.stem.parametrizations.weight.original
    assert torch.allclose(ema, live - 0.5)


@pytest.mark.parametrize(("changes", "field"), [
    ({"full_height": 60}, "full_height"),
    ({"macro": 24}, "macro"),
    ({"coords": "spherical"}, "coords"),
    ({"z_dim": 0}, "z_dim"),
    ({"sampling": "random"}, "sampling"),
])
def test_bad_model_configs_name_the_field(changes: dict, field: str) -> None:
    model = ModelConfig(**changes)
    with pytest.raises(ConfigError, match=field):
        model.validate()


def test_overrides_and_yaml_round_trip() -> None:
    overrides = ["optim.lr_g=2e-4", "ngf=8", "model.coords=cylindrical"]
    config = apply_overrides(get_preset("tiny"), overrides)
    assert config.optim.lr_g == 2e-4 and config.model.ngf == 8
    assert Config.from_yaml(config.to_yaml()).to_dict() == config.to_dict()
    with pytest.raises(ConfigError, match=r"train\.nope"):
        apply_overrides(config, ["train.nope=1"])
    with pytest.raises(ConfigError, match="unknown key"):
        Config.from_dict({"model": {"bogus": 1}})
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("celeba-9000")


def test_recalibrated_ema_is_spectrally_normalised_for_its_own_weights() -> None:
    """A3: the EMA's weights differ from the live G's, so its spectral norm must use u, v of
    its own weights: recalibration sets them (sigma_max 1); before, the live G's u, v stayed
    (tests/test_training.py measures a trained run)."""
    _, model, _ = _tiny_setup()
    ema = model.generator_ema
    with torch.no_grad():  # the EMA drifts away from G: another weight, another top pair
        for p in model.generator.parameters():
            p.add_(0.2 * torch.randn_like(p))
        for _ in range(3):
            model.generator(torch.rand(4, 32), torch.rand(4, 2))  # live G's power iterations
    update_ema(model, step=1000, decay=0.5, warmup=0)
    model.recalibrate_ema(4, batches=2)
    ema.eval()
    with torch.no_grad():
        for name, module in ema.named_modules():
            if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
                weight = module.weight.reshape(module.weight.shape[0], -1)
                sigma = torch.linalg.matrix_norm(weight.double(), ord=2).item()
                assert sigma == pytest.approx(1.0, abs=1e-4), name


def test_cylindrical_spatial_loss_is_the_vertical_coordinate_only() -> None:
    """A2: a rolled real panorama's angle is unknowable, so L_S (D's on reals, G's on fakes)
    compares only y on the cylinder; Cartesian L_S compares every coordinate (eq. 3)."""
    from cocogan.losses import CocoGANLoss

    config = get_preset("tiny-panorama")
    panorama = CocoGANLoss(CocoGAN(config.model), config)
    target = torch.tensor([[0.5, 1.0, 0.0], [-1.0, 0.0, 1.0]])
    wrong_angle = target * torch.tensor([1.0, -1.0, -1.0])
    assert panorama.spatial(wrong_angle, target).tolist() == [0.0, 0.0]
    wrong_row = target + torch.tensor([0.2, 0.0, 0.0])
    assert panorama.spatial(wrong_row, target).tolist() == pytest.approx([0.04, 0.04])
    flat = CocoGANLoss(CocoGAN(get_preset("tiny").model), config)
    assert flat.spatial(torch.zeros(2, 2), torch.ones(2, 2)).tolist() == pytest.approx([1.0, 1.0])


def test_z_phase_turns_the_panorama_by_pi_z0() -> None:
    """With model.z_phase, G(z, angle t) equals the plain G(z, t + pi z[0]) with the same weights
    (the turn is exact, so each latent draws its scene at its own heading)."""
    from cocogan.coords import coordinate_system

    config = get_preset("tiny-panorama")
    config.model.z_phase = True
    torch.manual_seed(0)
    turned = CocoGAN(config.model).generator.eval()
    assert isinstance(turned, HeadingGenerator)
    plain = SeamlessGenerator(turned.z_dim, 3, turned.micro, config.model.ngf).eval()
    plain.load_state_dict(turned.state_dict())
    coords = coordinate_system(config.model)
    z = torch.rand(6, turned.z_dim) * 2 - 1
    cols = torch.arange(6)
    here = coords.micro_coords(torch.zeros(6, dtype=torch.long), cols)
    with torch.no_grad():
        angle = torch.atan2(here[:, 2], here[:, 1]) + torch.pi * z[:, 0]
        moved = torch.stack([here[:, 0], torch.cos(angle), torch.sin(angle)], dim=1)
        assert torch.allclose(turned(z, here), plain(z, moved), atol=1e-5)
        assert not torch.allclose(turned(z, here), plain(z, here), atol=1e-3)
    with pytest.raises(ConfigError, match=r"z_phase.*cylindrical"):
        changed = get_preset("tiny")
        changed.model.z_phase = True
        changed.validate()
