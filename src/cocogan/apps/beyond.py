"""Beyond-boundary generation (ICCV 2019 version of the paper): the micro grid extended by
whole patches past the trained image, at coordinates outside [-1, 1] (G saw them only if
fine-tuned with ``--extrapolate``); a cylindrical run extends vertically only (B batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.render import DEFAULT_CHUNK, GridRect, sample_rect


@dataclass(frozen=True)
class Extension:
    """Micro patches added past each border of the trained grid (each >= 0)."""

    top: int
    bottom: int
    left: int
    right: int

    @classmethod
    def of(cls, values: Sequence[int]) -> Extension:
        """One count for every side, or (top, bottom, left, right) (``--extend``)."""
        if len(values) not in (1, 4) or any(v < 0 for v in values):
            raise ValueError(f"--extend takes 1 or 4 counts of micro patches >= 0, got "
                             f"{list(values)}")
        return cls(*(list(values) * 4 if len(values) == 1 else values))


def extended_rect(coords: CoordinateSystem, extension: Extension) -> GridRect:
    """The trained grid grown by ``extension``; its top-left may be negative."""
    if coords.cyclic and (extension.left or extension.right):
        raise ValueError("--extend: a cylindrical run has no left or right border (its columns "
                         "wrap); extend top/bottom only, e.g. --extend 1,1,0,0")
    return GridRect(-extension.top, coords.grid_h + extension.bottom,
                    -extension.left, coords.grid_w + extension.right)


def beyond(model: CocoGAN, z: Tensor, extension: Extension, *, raw: bool = False,
           chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Images (B, 3, (K_y + top + bottom) m, (K_x + left + right) m) on the extended grid;
    the trained image is the sub-rectangle ``extension.top`` and ``.left`` patches in."""
    return sample_rect(model, z, extended_rect(model.coords, extension), raw=raw, chunk=chunk)
