"""A folder of image files as a dataset of full images (the real x of the paper, Sec. 2),
each a float32 tensor (3, H, W) in [-1, 1]."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError
from .imaging import CELEBA_SIZE, IMAGE_EXTENSIONS, is_image_file, load_image
from .split import select_split

LARGE_IMAGE_PIXELS = 16_000_000  # larger files get a warning: decoding each takes ~0.1-1 s
_SHOW_NAMES = 5  # how many offending file names a warning lists
_FIX_HINT = "name a folder of images (train --data, eval --real) or builtin:blobs / builtin:skyline"


def scan_images(root: str | os.PathLike[str]) -> list[Path]:
    """All image files under root, recursively, sorted by relative POSIX path (one order on every
    machine), without hidden names ("._x.jpg") or non-regular files; DataError for a non-folder."""
    base = Path(root).expanduser()
    if not base.exists():
        raise DataError(f"data path {base} does not exist: {_FIX_HINT}")
    if not base.is_dir():
        raise DataError(f"data path {base} is not a folder: {_FIX_HINT}")
    found: list[Path] = []
    # Linked folders are followed, but each real folder is scanned once: a link loop
    # (`ln -s . loop`) would otherwise recurse forever or count the same files many times.
    seen = {_identity(base)}
    repeated: list[Path] = []
    odd: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        kept = []
        for name in dirnames:
            if name.startswith("."):
                continue
            identity = _identity(Path(dirpath, name))
            if identity is None or identity in seen:
                repeated.append(Path(dirpath, name))
                continue
            seen.add(identity)
            kept.append(name)
        dirnames[:] = kept
        named = [Path(dirpath, f) for f in filenames if not f.startswith(".")
                 and is_image_file(Path(f))]
        # A FIFO or device named *.png would block the decoder's open() forever (27.10).
        found.extend(p for p in named if p.is_file())
        odd.extend(p for p in named if not p.is_file())
    for paths, what in ((odd, f"file(s) under {base} named like images that are not regular "
                              "files (a FIFO, socket or device)"),
                        (repeated, f"linked folder(s) under {base} that lead to a folder already "
                                   "scanned (a link loop or a duplicate)")):
        if paths:
            warnings.warn(f"skipped {len(paths)} {what}: {_names(paths)}", stacklevel=2)
    return sorted(found, key=lambda p: p.relative_to(base).as_posix())


def _identity(folder: Path) -> tuple[int, int] | None:
    """(device, inode) of the real folder behind ``folder``; None when it cannot be read."""
    try:
        stat = folder.stat()
    except OSError:  # a dangling link or a loop the OS refuses to resolve
        return None
    return stat.st_dev, stat.st_ino


def _names(paths: Sequence[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_SHOW_NAMES])
    return shown + (", ..." if len(paths) > _SHOW_NAMES else "")


class ImageFolderDataset(Dataset[torch.Tensor]):
    """Images under a folder, decoded and resized on access. Unreadable files are dropped at
    construction (``skipped``); one that fails to decode later is replaced by the next readable
    index (``load_failures`` counts them), so one bad file never stops a long run."""

    def __init__(
        self, root: str | os.PathLike[str], height: int, width: int, *,
        celeba_crop: bool = False,  # authors' CelebA face box (aligned 178x218 input); off: False
        cylindrical: bool = False,  # panoramas: resize without cropping; off: centre-crop
        split: str | None = None,  # "train" / "holdout": one side of data.split (None: all)
        resample: str = "lanczos",  # resize filter: "lanczos" or "bilinear" (data.resample)
    ) -> None:
        if height <= 0 or width <= 0:
            raise DataError(f"image size must be positive, got height={height}, width={width}")
        if celeba_crop and cylindrical:
            raise DataError("celeba_crop and cylindrical cannot be combined: choose one")
        self.root = Path(root).expanduser()
        self.height, self.width = height, width
        self.cylindrical, self.resample = cylindrical, resample
        self.mode = "celeba" if celeba_crop else "stretch" if cylindrical else "cover"
        self.load_failures = 0
        self._bad: set[int] = set()

        candidates = select_split(scan_images(self.root), split, self.root)
        if not candidates:
            exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
            raise DataError(f"no usable images ({exts}) found under {self.root}: {_FIX_HINT}")
        self.paths, self.skipped = self._probe(candidates, celeba_crop)

    def _probe(self, candidates: list[Path], celeba_crop: bool) -> tuple[list[Path], list[Path]]:
        """Split candidates into readable and skipped files; warn once about each problem."""
        good: list[Path] = []
        bad, too_large, large, odd_size = [], [], [], []  # list[Path] each
        for path in candidates:
            try:  # PIL parses the header and structure; verify() decodes no pixels (cheap)
                with Image.open(path) as img:
                    size = img.size
                    img.verify()
            except Image.DecompressionBombError:
                too_large.append(path)
                continue
            except Exception:  # PIL raises many unrelated types (OSError, SyntaxError...)
                bad.append(path)
                continue
            good.append(path)
            if size[0] * size[1] > LARGE_IMAGE_PIXELS:
                large.append(path)
            if celeba_crop and size != CELEBA_SIZE:
                odd_size.append(path)
        if not good:
            raise DataError(f"none of the {len(bad + too_large)} image files under {self.root} "
                            f"could be read ({_names(bad + too_large)}): {_FIX_HINT}")
        limit = (Image.MAX_IMAGE_PIXELS or 0) * 2 // 1_000_000
        for paths, text in (
            (too_large, f"skipping {len(too_large)} image file(s) over {limit} megapixels (too "
                        f"large to decode safely) under {self.root}: {_names(too_large)}; "
                        "resize them to use them"),
            (large, f"{len(large)} image file(s) under {self.root} exceed "
                    f"{LARGE_IMAGE_PIXELS // 1_000_000} megapixels and are decoded in full at "
                    f"every draw, which is slow: {_names(large)}; resize them once to a few "
                    "times the training size"),
            (bad, f"skipping {len(bad)} unreadable image file(s) under {self.root}: "
                  f"{_names(bad)}"),
            (odd_size, f"celeba_crop expects aligned CelebA images of 178x218, but "
                       f"{len(odd_size)} file(s) differ ({_names(odd_size)}); the fixed face box "
                       "may miss the face")):
            if paths:
                warnings.warn(text, stacklevel=3)
        return good, bad + too_large

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.paths)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        for step in range(n):
            i = (index + step) % n  # deterministic substitute: the next readable file
            if i in self._bad:
                continue
            try:
                x = load_image(self.paths[i], self.height, self.width, self.mode, self.resample)
            except Exception as exc:  # any decoder failure: substitute rather than crash a run
                self._bad.add(i)
                self.load_failures += 1
                if self.load_failures == 1:
                    warnings.warn(f"could not decode {self.paths[i]} ({exc}); using the next "
                                  "image instead", stacklevel=2)
                continue
            return x
        raise DataError(f"no image under {self.root} could be decoded: {_FIX_HINT}")
