"""The `spatial` metric: does D's spatial head (trained by L_S, eq. 3) place *real* macro
patches? If not, L_S gives G no positional signal. Every real image is cropped at every macro
position; accuracy is the share whose nearest position is the true one, error the mean distance
in grid units (on the cylinder, of the row alone). Shapes: B images, M macro positions per
image, C/H/W image, S spatial head outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from cocogan.coords import CoordinateSystem
from cocogan.nn import Discriminator
from cocogan.nn.discriminator import spatial_dim
from cocogan.patches import crop
from cocogan.render import evaluating

# Maps macro patches (N, C, mh, mw) to predicted macro coordinates (N, D).
Predictor = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class SpatialResult:
    accuracy: float  # fraction of patches placed at the right discrete macro position, [0, 1]
    error: float  # mean distance of the decoded position from the truth, grid units, >= 0
    patches: int  # macro patches evaluated
    vertical: bool = False  # cylinder: the row alone (accuracy and error of the row)

    def values(self) -> dict[str, float]:
        """The result dict's keys: spatial_acc / _err, or spatial_row_acc / _err."""
        name = "spatial_row" if self.vertical else "spatial"
        return {f"{name}_acc": self.accuracy, f"{name}_err": self.error}


def discriminator_predictor(discriminator: Discriminator) -> Predictor:
    """D's spatial head on D's features in eval mode: the head's batch norm tracks statistics of
    real patches in D's own update, so that is what training measured, and D is left unchanged."""
    device = next(discriminator.parameters()).device

    @torch.no_grad()
    def predict(patches: Tensor) -> Tensor:
        with evaluating(discriminator):
            return discriminator.spatial(discriminator.features(patches.to(device))).float()

    return predict


def spatial_accuracy(predict: Predictor, coords: CoordinateSystem,
                     batches: Iterable[Tensor]) -> SpatialResult:
    """Accuracy and mean position error of `predict` (e.g. `discriminator_predictor`) on all
    macro patches of real full images (B, C, H, W) in [-1, 1]; on the cylinder, of the row."""
    correct_sum, error_sum, count = 0, 0.0, 0
    grid_rows, grid_cols = coords.macro_grid()  # (M,)
    top, left = coords.pixel_offset(grid_rows.float(), grid_cols.float())
    height, width = coords.macro_h * coords.micro, coords.macro_w * coords.micro
    for images in batches:  # every macro patch of every image, image-major: (B * M, C, mh, mw)
        b, tiled = images.shape[0], images.repeat_interleave(grid_rows.numel(), 0)
        patches = crop(tiled, top.repeat(b), left.repeat(b), height, width, wrap=coords.cyclic)
        rows, cols = grid_rows.repeat(b), grid_cols.repeat(b)
        predicted = predict(patches).float().cpu()  # (B * M, S)
        expected = (patches.shape[0], spatial_dim(coords.coord_dim))
        assert predicted.shape == expected, \
            f"spatial head: got {tuple(predicted.shape)}, expected {expected}"
        near_rows, near_cols = coords.nearest_macro(predicted)
        frac_rows, frac_cols = coords.decode_macro(predicted)
        d_rows = frac_rows - rows.to(frac_rows)
        if near_cols is None or frac_cols is None:  # the cylinder: the row alone
            correct, error = near_rows == rows, d_rows.abs()
        else:
            d_cols = frac_cols - cols.to(frac_cols)
            correct = (near_rows == rows) & (near_cols == cols)
            error = torch.sqrt(d_rows**2 + d_cols**2)
        correct_sum += int(correct.sum())
        error_sum += float(error.double().sum())
        count += patches.shape[0]
    if count == 0:
        raise ValueError("the spatial metric needs at least one real image")
    return SpatialResult(accuracy=correct_sum / count, error=error_sum / count, patches=count,
                         vertical=coords.cyclic)
