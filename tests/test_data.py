"""Tests of cocogan.data: folder decoding, built-in procedural datasets, fingerprints."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocogan.data import (
    BUILTIN_DATASETS,
    BuiltinDataset,
    DataError,
    ImageFolderDataset,
    build_dataset,
    dataset_fingerprint,
)
from cocogan.data.imaging import to_rgb

EMOJI_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emoji-noto-64"
needs_emoji = pytest.mark.skipif(not EMOJI_DIR.is_dir(), reason=f"{EMOJI_DIR} not present")


@pytest.fixture
def emoji_folder(tmp_path: Path) -> Path:
    """20 RGBA emoji (5 of them nested), a corrupt PNG, a greyscale JPEG and a text file."""
    if not EMOJI_DIR.is_dir():
        pytest.skip(f"{EMOJI_DIR} not present")
    root = tmp_path / "images"
    nested = root / "nested" / "deeper"
    nested.mkdir(parents=True)
    sources = sorted(EMOJI_DIR.glob("*.png"))[:20]
    for i, src in enumerate(sources):
        shutil.copy(src, (nested if i >= 15 else root) / src.name)
    (root / "corrupt.png").write_bytes(np.random.default_rng(0).bytes(500))
    grey = np.tile(np.linspace(0, 255, 80, dtype=np.uint8), (60, 1))
    Image.fromarray(grey, mode="L").save(root / "GREY.JPG")  # upper-case suffix counts too
    (root / "notes.txt").write_text("not an image")
    return root


def _load(root: Path, *args: int, **kwargs: bool) -> ImageFolderDataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ImageFolderDataset(root, *args, **kwargs)


def test_folder_skips_corrupt_and_converts(emoji_folder: Path) -> None:
    with pytest.warns(UserWarning, match=r"skipping 1 unreadable.*corrupt\.png"):
        ds = ImageFolderDataset(emoji_folder, 64, 64)
    assert [p.name for p in ds.skipped] == ["corrupt.png"]
    assert len(ds) == 21  # 20 emoji + the greyscale JPEG
    rel = [p.relative_to(emoji_folder).as_posix() for p in ds.paths]
    assert rel == sorted(rel) and sum(r.startswith("nested/deeper/") for r in rel) == 5
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and x.is_contiguous()
        assert x.min() >= -1.0 and x.max() <= 1.0
    grey = ds[[p.name for p in ds.paths].index("GREY.JPG")]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


@needs_emoji
def test_transparent_background_becomes_white(emoji_folder: Path) -> None:
    ds = _load(emoji_folder, 64, 64)
    checked = 0
    for i, path in enumerate(ds.paths):
        with Image.open(path) as img:
            if img.mode == "RGBA" and img.getpixel((0, 0))[3] == 0:
                assert torch.all(ds[i][:, 0, 0] == 1.0)
                checked += 1
    assert checked > 0


@needs_emoji
@pytest.mark.parametrize(("height", "width"), [(32, 32), (32, 48), (96, 96)])
def test_folder_resizes(emoji_folder: Path, height: int, width: int) -> None:
    ds = _load(emoji_folder, height, width)
    x = ds[0]
    assert x.shape == (3, height, width) and x.min() >= -1.0 and x.max() <= 1.0


def _transparent_p() -> Image.Image:
    img = Image.new("P", (4, 4))
    img.putpalette([0, 0, 0, 255, 0, 0])
    img.info["transparency"] = 0
    return img


@pytest.mark.parametrize(
    "make",
    [
        _transparent_p,
        lambda: Image.new("LA", (4, 4), (0, 0)),
        lambda: Image.new("RGBA", (4, 4), (0, 0, 0, 0)),
        lambda: Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)),  # 16-bit grey
    ],
)
def test_to_rgb_white_background_and_bit_depth(make) -> None:
    assert to_rgb(make()).getpixel((0, 0)) == (255, 255, 255)


def test_celeba_crop_selects_face_box(tmp_path: Path) -> None:
    arr = np.full((218, 178, 3), 128, dtype=np.uint8)
    arr[50:178, 25:153] = (255, 0, 0)  # rows 50:178, columns 25:153: the authors' face box
    Image.fromarray(arr).save(tmp_path / "000001.png")
    x = ImageFolderDataset(tmp_path, 64, 64, celeba_crop=True)[0]
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1)
    assert torch.allclose(x, red.expand_as(x), atol=1e-6)
    plain = ImageFolderDataset(tmp_path, 64, 64)[0]  # centre crop keeps grey above and below
    assert plain[0, 0, 32] < 0.1 and plain[0, 32, 32] == 1.0


def test_bilinear_resample_is_the_releases_face_box_resize(tmp_path: Path) -> None:
    """N9: resample="bilinear" is the release's pipeline (crop rows 50:178, cols 25:153, then
    scipy.misc.imresize, i.e. PIL bilinear); the default stays Lanczos; the CelebA presets use
    bilinear; the filter is in the statistics' key."""
    from cocogan.config import ConfigError, apply_overrides
    from cocogan.presets import get_preset

    arr = np.random.default_rng(0).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "000001.png")
    face = Image.fromarray(arr[50:178, 25:153])
    for resample, pil in (("bilinear", Image.Resampling.BILINEAR),
                          ("lanczos", Image.Resampling.LANCZOS)):
        want = np.asarray(face.resize((64, 64), pil), dtype=np.float32) / 127.5 - 1
        got = ImageFolderDataset(tmp_path, 64, 64, celeba_crop=True, resample=resample)[0]
        np.testing.assert_allclose(got.permute(1, 2, 0).numpy(), want, atol=1e-6)
    assert not torch.equal(build_dataset(str(tmp_path), 64, 64, celeba_crop=True)[0],
                           build_dataset(str(tmp_path), 64, 64, celeba_crop=True,
                                         resample="bilinear")[0])
    assert get_preset("celeba64").data.resample == "bilinear"
    assert get_preset("lsun64").data.resample == "lanczos"
    keys = {dataset_fingerprint(str(tmp_path), 64, 64, True, resample=r)
            for r in ("lanczos", "bilinear")}
    assert len(keys) == 2
    with pytest.raises(ConfigError, match=r"data\.resample must be one of lanczos, bilinear"):
        apply_overrides(get_preset("tiny"), ["data.resample=nearest"]).validate()


def test_celeba_crop_warns_on_other_sizes(tmp_path: Path) -> None:
    Image.new("RGB", (200, 200)).save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="178x218"):
        ImageFolderDataset(tmp_path, 64, 64, celeba_crop=True)


def test_missing_and_empty_folders_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no usable images .*empty.*builtin:"):
        (tmp_path / "empty").mkdir()
        build_dataset(str(tmp_path / "empty"), 64, 64)
    with pytest.raises(DataError, match=r"does not exist.*--data"):
        build_dataset(str(tmp_path / "nowhere"), 64, 64)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="none of the 1 image files"):
        build_dataset(str(tmp_path / "bad"), 64, 64)
    assert issubclass(DataError, ValueError)


def test_decode_failure_substitutes_next_image(tmp_path: Path) -> None:
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(tmp_path / f"{i}.png")
    ds = ImageFolderDataset(tmp_path, 16, 16)
    expected = ds[2]
    (tmp_path / "1.png").write_bytes(b"corrupted after the scan")
    with pytest.warns(UserWarning, match="could not decode"):
        assert torch.equal(ds[1], expected)
    assert ds.load_failures == 1
    with pytest.raises(IndexError):
        ds[3]


@pytest.mark.parametrize("name", sorted(BUILTIN_DATASETS))
def test_builtin_deterministic_and_in_range(name: str) -> None:
    a = BuiltinDataset(name, 32, 64, seed=3)
    b = BuiltinDataset(name, 32, 64, seed=3)
    assert torch.equal(a[5], b[5])
    assert not torch.equal(a[5], a[6])
    assert not torch.equal(a[5], BuiltinDataset(name, 32, 64, seed=4)[5])
    for i in range(8):
        x = a[i]
        assert x.shape == (3, 32, 64) and x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert len(a) == 10000 and len(BuiltinDataset(name, 8, 8, length=7)) == 7


def test_skyline_is_cyclic() -> None:
    ds = BuiltinDataset("skyline", 64, 192)
    images = torch.stack([ds[i] for i in range(16)])  # (16, 3, H, W)
    wrap = (images[..., 0] - images[..., -1]).abs().mean()
    interior = (images[..., 1:] - images[..., :-1]).abs().mean()
    assert wrap / interior < 2.0
    # No seam in any image: the wrap step is never larger than that image's largest interior step.
    steps = (images[..., 1:] - images[..., :-1]).abs().amax(dim=(1, 2, 3))  # (16,)
    assert torch.all((images[..., 0] - images[..., -1]).abs().amax(dim=(1, 2)) <= steps)
    assert ds.cylindrical and BUILTIN_DATASETS["skyline"].cylindrical


def test_blobs_span_several_patches() -> None:
    ds = BuiltinDataset("blobs", 64, 64)
    for i in range(16):
        _, mask = ds.render(i)
        patches = (mask > 0.5).reshape(4, 16, 4, 16).any(axis=(1, 3))  # (4, 4) micro patches
        assert patches.sum() >= 4
        assert mask.mean() > 0.05


def test_build_dataset_routes_and_validates(emoji_folder: Path) -> None:
    assert isinstance(build_dataset("builtin:blobs", 32, 32, seed=1), BuiltinDataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert isinstance(build_dataset(str(emoji_folder), 32, 32), ImageFolderDataset)
    with pytest.raises(DataError, match=r"builtin:blobs.*builtin:skyline"):
        build_dataset("builtin:nope", 32, 32)
    with pytest.warns(UserWarning, match="not cyclic"):
        build_dataset("builtin:blobs", 32, 32, cylindrical=True)


def test_fingerprint(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    key = dataset_fingerprint(str(tmp_path), 64, 64, False)
    assert key == dataset_fingerprint(str(tmp_path), 64, 64, False)
    assert key != dataset_fingerprint(str(tmp_path), 32, 32, False)
    assert key != dataset_fingerprint(str(tmp_path), 64, 64, True)
    assert key != dataset_fingerprint(str(tmp_path), 64, 64, cylindrical=True)
    os.utime(tmp_path / "a.png", ns=(0, 10**9))
    changed = dataset_fingerprint(str(tmp_path), 64, 64, False)
    assert changed != key and "/" not in changed
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    assert dataset_fingerprint(str(tmp_path), 64, 64, False) != changed
    assert dataset_fingerprint("builtin:skyline", 64, 192, False).startswith("builtin-skyline-")
    with pytest.raises(DataError):
        dataset_fingerprint("builtin:nope", 64, 64, False)


def test_folder_panoramas_are_not_rolled(tmp_path: Path) -> None:
    """A10: rolling lives in the training stream (step RNG, exact resume); a folder dataset
    returns the image as it is."""
    pixels = np.random.default_rng(0).integers(0, 255, (32, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "pano.png")
    dataset = ImageFolderDataset(tmp_path, 32, 96, cylindrical=True)
    first = dataset[0]
    assert all(torch.equal(first, dataset[0]) for _ in range(3))


def test_split_is_disjoint_complete_and_keeps_variants_together(tmp_path: Path) -> None:
    from cocogan.data.split import HOLDOUT_EVERY, group_key, is_held_out

    names = [f"{code:05x}.png" for code in range(0x1f600, 0x1f700)]
    names += [f"1f44b-1f3f{tone}.png" for tone in "bcdef"] + ["1f44b.png"]
    for name in names:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    every = {p.name for p in ImageFolderDataset(tmp_path, 8, 8).paths}
    train = {p.name for p in build_dataset(f"{tmp_path}::train", 8, 8).paths}
    held = {p.name for p in build_dataset(f"{tmp_path}::holdout", 8, 8).paths}
    assert train | held == every and not train & held
    assert abs(len(held) / len(every) - 1 / HOLDOUT_EVERY) < 0.06  # about one group in ten
    waving = {n for n in every if n.startswith("1f44b")}
    assert waving <= train or waving <= held  # the skin tones of one emoji stay on one side
    # the rule is the documented one: the first 8 hex digits of SHA-256(group) mod 10
    import hashlib
    for name in names[:40]:
        digest = hashlib.sha256(group_key(Path(name)).encode()).hexdigest()
        assert is_held_out(Path(name)) == (int(digest[:8], 16) % 10 == 0)
        assert (name in held) == is_held_out(Path(name))
    keys = {dataset_fingerprint(s, 8, 8) for s in (str(tmp_path), f"{tmp_path}::train",
                                                     f"{tmp_path}::holdout")}
    assert len(keys) == 3  # cached real statistics never mix the sides
    with pytest.raises(DataError, match=r"unknown split 'test'.*::holdout"):
        build_dataset(f"{tmp_path}::test", 8, 8)


@pytest.mark.parametrize("pattern", ["img-{:05d}.png", "IMG_2020{:04d}.jpg", "IMG-2020{:04d}.jpg",
                                     "cat-{}.png", "image-{}.png", "sample-{}.png"])
def test_split_of_common_names_holds_out_near_the_fraction(pattern: str) -> None:
    """N8 / 27.4: only emoji-like names (hex code points) are grouped; others hash whole, so a
    folder of img-NNNNN never falls on one side (it did: 0 of 2,000 held out)."""
    from cocogan.data.split import HOLDOUT_EVERY, select_split

    paths = [Path(pattern.format(i)) for i in range(2000)]
    held = select_split(paths, "holdout", Path("d"))
    train = select_split(paths, "train", Path("d"))
    assert len(held) + len(train) == 2000 and not set(held) & set(train)
    assert abs(len(held) / 2000 - 1 / HOLDOUT_EVERY) < 0.03


def test_emoji_split_is_unchanged(emoji_dir: Path) -> None:
    """The shipped emoji32 card and its figures were made on this split: every file stays on
    its side (the rule before N8: SHA-256 of the name up to the first '-' or '.')."""
    import hashlib

    from cocogan.data.folder import scan_images
    from cocogan.data.split import select_split

    paths = scan_images(emoji_dir)

    def before(path: Path) -> bool:
        key = path.name.split(".", 1)[0].split("-", 1)[0]
        return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10 == 0

    assert select_split(paths, "holdout", emoji_dir) == [p for p in paths if before(p)]
    assert select_split(paths, "train", emoji_dir) == [p for p in paths if not before(p)]


def test_degenerate_splits_stop_with_one_line(tmp_path: Path) -> None:
    """An empty side, or a share far outside 5-20 % with enough groups, is refused."""
    from cocogan.data.split import is_held_out, select_split

    for i in range(12):  # one code-point group: the whole folder on one side
        Image.new("RGB", (8, 8)).save(tmp_path / f"cafe-{i:04x}.png")
    side = "held-out" if not is_held_out(tmp_path / "cafe.png") else "training"
    with pytest.raises(DataError, match=f"leaves the {side} side empty.*DIR whole"):
        build_dataset(f"{tmp_path}::train", 8, 8)
    prefix = next(f"{c:04x}" for c in range(0x1f600, 0x1f700) if is_held_out(Path(f"{c:04x}")))
    paths = [Path(f"n{i}.png") for i in range(1200)]  # 1,200 groups of one
    paths += [Path(f"{prefix}-{i:04x}.png") for i in range(1000)]  # one held-out group
    with pytest.raises(DataError, match=r"holds out \d+\.\d% of the files, outside 5%-20%"):
        select_split(paths, "holdout", Path("d"))


def test_odd_split_names_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """27.19: '::train' names no folder (it scanned the current one); a folder whose own name
    holds '::' is usable whole."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"names no folder: write DIR::train"):
        build_dataset("::train", 8, 8)
    weird = tmp_path / "we::ird"
    weird.mkdir()
    Image.new("RGB", (8, 8)).save(weird / "a.png")
    assert len(build_dataset(str(weird), 8, 8)) == 1
    with pytest.raises(DataError, match=r"unknown split 'x'.*::holdout"):
        build_dataset(f"{tmp_path}::x", 8, 8)
    with pytest.raises(DataError, match=r"no train/holdout split.*write builtin:skyline$"):
        build_dataset("builtin:skyline::train", 8, 8)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_fifo_named_png_is_skipped_not_waited_on(tmp_path: Path) -> None:
    """27.10: opening a FIFO blocks until a writer comes; train and eval hung on one."""
    Image.new("RGB", (8, 8), (10, 200, 10)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "b.png")
    with pytest.warns(UserWarning, match=r"skipped 1 file.*not regular files.*b\.png"):
        dataset = build_dataset(str(tmp_path), 8, 8)
    assert [p.name for p in dataset.paths] == ["a.png"] and dataset[0].shape == (3, 8, 8)
    with pytest.warns(UserWarning, match="not regular"):
        assert dataset_fingerprint(str(tmp_path), 8, 8)
