"""The evaluation defaults and metric-name parsing. Counts follow the papers (FID/KID on 50,000
images, Sec. 3.1; SWD on 16,384, PGGAN); seams, wrap and spatial converge on a subset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cocogan.metrics import METRICS


@dataclass(frozen=True)
class EvalConfig:
    """How many images each metric sees, and batching."""

    n: int = 50_000  # generated images for FID/KID (paper: 50,000); real: min(n, dataset size)
    batch: int = 64  # full images per generator / feature-extractor forward pass
    seed: int = 0  # seeds the latents and the SWD neighbourhoods; the real subset is fixed
    swd_images: int = 16_384  # images per side for SWD (PGGAN); also capped by n
    swd_descriptors: int = 1 << 18  # 7x7 descriptors kept per pyramid level (bounds memory)
    seam_images: int = 2_000  # images per side for the seams and wrap ratios
    spatial_images: int = 1_000  # real images whose every macro patch goes through D's head
    kid_features: int = 10_000  # feature rows per side kept for KID and precision/recall
    kid_subsets: int = 100  # KID random subsets (Bińkowski et al.)
    kid_subset_size: int = 1_000  # samples per KID subset

    def validate(self) -> EvalConfig:
        """Raise ValueError naming the first non-positive count."""
        for name, value in vars(self).items():
            if name != "seed" and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"evaluation setting {name} must be a positive integer, "
                                 f"got {value!r}")
        return self

    def with_n(self, n: int) -> EvalConfig:
        """A copy with another sample count (e.g. a small subset during training)."""
        return replace(self, n=n)


# During training (`EvalCallback`): a small subset, seconds per evaluation of the tiny presets on
# a CPU. FID is biased upwards on 1,000 images; raise n for it (SWD stays at 1,000).
TRAINING_EVAL = EvalConfig(n=1_000, swd_images=1_000, seam_images=500, spatial_images=250)

FEATURE_METRICS = ("fid", "kid", "precision", "recall")  # need a feature extractor (Inception)


def parse_metrics(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'fid,swd' -> ('fid', 'swd'), checked against the METRICS registry (order kept, no dups);
    ValueError for an unknown name, listing the allowed ones."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip().lower() for n in names if n.strip()]
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(METRICS)}")
    return tuple(dict.fromkeys(names))
