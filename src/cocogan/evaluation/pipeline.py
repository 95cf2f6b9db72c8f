"""The evaluation pipeline: a reference computed once from real images, then any number of
evaluations of generated images against it (`cocogan eval`, or every K training steps); the
result is a flat dict of floats (docs/evaluation.md, "The metrics", lists every key). Each
metric's first stage is a sink: batches go to the sinks that still want images and are then
dropped (50,000 images at 256x768 would not fit). The real side of FID/KID (minutes of
features) is cached in $COCOGAN_CACHE/stats, keyed by the source's fingerprint, the
extractor's name (with the weights' SHA-256: issue 19) and the counts.
Shapes: B batch, C/H/W image, D feature dims.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from cocogan.coords import CoordinateSystem
from cocogan.evaluation.sampling import Sampler, generated_batches, real_batches
from cocogan.evaluation.settings import FEATURE_METRICS, EvalConfig
from cocogan.evaluation.spatial import Predictor, spatial_accuracy
from cocogan.metrics import (
    FeatureExtractor,
    FeatureStats,
    StatsAccumulator,
    colour_distance,
    content_spread,
    fid_from_stats,
    kernel_inception_distance,
    likeness,
    object_seam_ratio,
    precision_recall,
    repetition,
    seam_profile,
    seam_ratio,
    sliced_wasserstein_from_descriptors,
    swd_descriptors,
    wrap_ratio,
)
from cocogan.metrics.frechet import ArrayLike, NonFiniteError
from cocogan.outputs import atomic_write, cache_folder

CACHE_VERSION = 2  # bump when the cached content or its meaning changes (2: weights hash)


@dataclass(frozen=True)
class RealFeatures:
    """Reference-side FID/KID inputs: Gaussian statistics and the rows kept for KID."""

    stats: FeatureStats
    kept: np.ndarray  # (K, D) float32 feature rows, K <= the KID keep count


def stats_key(fingerprint: str, extractor: str, count: int, keep: int) -> str:
    """File-name-safe key of a `dataset_fingerprint`, an extractor's name, the real images
    summarised and the rows kept for KID, e.g. ``builtin-blobs-32x32-...-n10000-k10000-v2``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", extractor)
    return f"{fingerprint}-{name}-n{count}-k{keep}-v{CACHE_VERSION}"


def load_real_features(key: str) -> RealFeatures | None:
    """Cached entry for `key`, or None when absent or unreadable (then it is recomputed)."""
    path = cache_folder("stats") / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            stats = FeatureStats(mean=f["mean"], cov=f["cov"], n=int(f["n"]))
            real = RealFeatures(stats=stats, kept=f["kept"])
    except (OSError, KeyError, ValueError):
        return None
    finite = all(np.isfinite(a).all() for a in (stats.mean, stats.cov, real.kept))
    return real if finite else None  # a poisoned entry is recomputed, never used


def save_real_features(key: str, real: RealFeatures) -> None:
    """Store an entry atomically (a concurrent reader never sees a partial file)."""
    path = cache_folder("stats") / f"{key}.npz"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, mean=real.stats.mean, cov=real.stats.cov,
                     n=np.int64(real.stats.n), kept=real.kept.astype(np.float32))

    atomic_write(path, write)


@dataclass
class Reference:
    """Everything the real side contributes, computed once per evaluation setup."""

    metrics: tuple[str, ...]  # metric names this reference serves
    coords: CoordinateSystem  # geometry: micro size for seams, macro grid for spatial
    features: RealFeatures | None = None  # FID/KID statistics (maybe from the cache)
    swd: list[Tensor] | None = None  # real SWD descriptors per level
    images: Tensor | None = None  # kept real images (N, C, H, W) for seams/wrap/spatial
    values: dict[str, float] = field(default_factory=dict)  # seams_real, wrap_real
    counts: dict[str, int] = field(default_factory=dict)  # real images per metric
    cache_hit: bool = False  # FID statistics came from the on-disk cache


MAX_DESCRIPTORS_PER_IMAGE = 128  # PGGAN's neighbourhoods per image and level


class Sink:
    """Takes images until it has `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    @property
    def wants(self) -> int:
        """How many more images this sink takes."""
        return max(0, self.limit - self.seen)

    def update(self, images: Tensor) -> None:
        """Consume a batch (B, C, H, W) in [-1, 1] with B <= wants."""
        assert images.shape[0] <= self.wants, f"sink got {images.shape[0]} > {self.wants}"
        self._consume(images)
        self.seen += images.shape[0]

    def _consume(self, images: Tensor) -> None:
        raise NotImplementedError


class FeatureSink(Sink):
    """FID/KID's stages 1-2: features streamed into mean/covariance, `keep` rows kept for KID."""

    def __init__(self, extractor: FeatureExtractor, limit: int, keep: int) -> None:
        super().__init__(limit)
        self.extractor = extractor
        self.accumulator = StatsAccumulator(keep=keep)

    def _consume(self, images: Tensor) -> None:
        self.accumulator.update(self.extractor(images))  # (B, D)


class SWDSink(Sink):
    """SWD's stage 1, per level. At most `budget` descriptors a level (PGGAN's 128 per image on
    16k images would need gigabytes); batch i draws with seed + i, so real and generated streams
    of equal batches share neighbourhood positions."""

    def __init__(self, limit: int, budget: int, seed: int) -> None:
        super().__init__(limit)
        self.per_image = max(1, min(MAX_DESCRIPTORS_PER_IMAGE, budget // max(limit, 1)))
        self.seed = seed
        self.levels: list[list[Tensor]] = []

    def _consume(self, images: Tensor) -> None:
        batch_index = len(self.levels[0]) if self.levels else 0
        desc = swd_descriptors(images, descriptors_per_image=self.per_image,
                               seed=self.seed + batch_index, batch_size=images.shape[0])
        if not self.levels:
            self.levels = [[] for _ in desc]
        for store, level in zip(self.levels, desc, strict=True):
            store.append(level)

    def descriptors(self) -> list[Tensor]:
        """One (N, C, 7, 7) tensor per pyramid level, finest first."""
        if not self.levels:
            raise ValueError("SWD needs at least one image")
        return [torch.cat(level, 0) for level in self.levels]


class ImageSink(Sink):
    """Keeps the first `limit` images as 8 bits: a quarter of float32, and what a saved PNG
    holds, so generated and real images (from 8-bit files) are measured alike."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.kept: list[Tensor] = []

    def _consume(self, images: Tensor) -> None:
        levels = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        self.kept.append(levels.cpu())

    def images(self) -> Tensor:
        """The kept images (N, C, H, W) as float32 in [-1, 1]."""
        if not self.kept:
            raise ValueError("no images were kept")
        return torch.cat(self.kept, 0).float() / 127.5 - 1.0


IMAGE_METRICS = ("seams", "wrap", "spread", "repeat", "likeness", "colour")  # on kept images
PR_METRICS = ("precision", "recall")  # from the feature rows kept for KID
ROLL_SEED = 0  # the real panoramas' rolls (N11); fixed, so cached statistics stay valid


def feed(sinks: list[Sink], batches: Callable[[int], Iterable[Tensor]], what: str,
         progress: bool, desc: str) -> None:
    """Hand each batch of `batches(limit)` (limit: the largest sink's) to the sinks that still
    want images, until none does, with a tqdm bar `desc` on stderr when `progress`. A NaN image
    (it would make every statistic NaN, and once hung FID) is refused, naming `what`."""
    if not any(s.wants for s in sinks):
        return
    from tqdm import tqdm

    limit = max(s.limit for s in sinks)
    with tqdm(total=limit, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True,
              disable=not progress) as bar:
        for images in batches(limit):
            if not torch.isfinite(images).all():
                raise NonFiniteError(f"{what} hold NaN or infinity")
            for sink in sinks:
                if sink.wants:
                    sink.update(images[: sink.wants])
            bar.update(images.shape[0])
            if not any(s.wants for s in sinks):
                break


def _sinks(metrics: tuple[str, ...], cfg: EvalConfig, extractor: FeatureExtractor | None,
           features: int | None, images: int) -> tuple[FeatureSink | None, SWDSink | None,
                                                        ImageSink | None]:
    """One side's sinks: FID/KID on `features` images (None: none), SWD, `images` kept (0: none)."""
    feature = None if features is None else \
        FeatureSink(extractor, features, keep=min(features, cfg.kid_features))
    swd = SWDSink(min(cfg.n, cfg.swd_images), cfg.swd_descriptors, cfg.seed) \
        if "swd" in metrics else None
    return feature, swd, ImageSink(images) if images else None


def reference_key(dataset: Dataset[Tensor], cfg: EvalConfig,
                  extractor: FeatureExtractor | None, fingerprint: str | None) -> str | None:
    """The cache key of the real FID/KID statistics, None when uncached (no fingerprint)."""
    if fingerprint is None or extractor is None:
        return None
    count = min(cfg.n, len(dataset))  # type: ignore[arg-type]
    return stats_key(fingerprint, extractor.name, count, min(count, cfg.kid_features))


def build_reference(metrics: tuple[str, ...], dataset: Dataset[Tensor],
                    coords: CoordinateSystem, cfg: EvalConfig, *,
                    extractor: FeatureExtractor | None = None,
                    fingerprint: str | None = None, progress: bool = False) -> Reference:
    """Every real-side stage `metrics` need, in one pass over a fixed subset of `dataset` (full
    images at the run's size); `fingerprint` (`dataset_fingerprint`) enables the cache."""
    if "wrap" in metrics and not coords.cyclic:
        raise ValueError("--metrics wrap needs a cylindrical (panorama) run; this run uses "
                         "cartesian coordinates: drop wrap")
    features = any(m in FEATURE_METRICS for m in metrics)
    if features and extractor is None:
        raise ValueError("fid/kid need a feature extractor (the Inception network)")
    ref = Reference(metrics=metrics, coords=coords)
    key = reference_key(dataset, cfg, extractor, fingerprint) if features else None
    if key is not None:
        ref.features = load_real_features(key)
        ref.cache_hit = ref.features is not None
    seams, spatial = min(cfg.n, cfg.seam_images), min(cfg.n, cfg.spatial_images)
    keep = max(seams if any(m in IMAGE_METRICS for m in metrics) else 0,
               spatial if "spatial" in metrics else 0)
    count = min(cfg.n, len(dataset)) if features and ref.features is None else None  # type: ignore[arg-type]
    feature_sink, swd_sink, image_sink = _sinks(metrics, cfg, extractor, count, keep)
    sinks: list[Sink] = [s for s in (feature_sink, swd_sink) if s is not None]
    if sinks and coords.cyclic:  # N11: the distribution metrics see the reals as trained on
        sinks = [RolledSink(s, real_rolls(s.limit, coords)) for s in sinks]
    sinks += [image_sink] if image_sink is not None else []
    feed(sinks, lambda limit: real_batches(dataset, limit, cfg.batch), "real images", progress,
         "real images")
    if feature_sink is not None:
        acc = feature_sink.accumulator
        ref.features = RealFeatures(stats=acc.stats(), kept=acc.features())
        if key is not None:
            try:
                save_real_features(key, ref.features)
            except OSError as error:  # a cache, not a result: the figures go on
                warnings.warn(f"real statistics not cached ({error})", stacklevel=2)
    if ref.features is not None:
        kept = ref.features.kept
        ref.counts.update({m: kept.shape[0] if m in PR_METRICS else ref.features.stats.n
                           for m in FEATURE_METRICS if m in metrics})
        half = kept.shape[0] // 2  # real vs real: the second half against the first
        _pr_values(ref.values, kept[:half], kept[half:2 * half], metrics, "_real")
    if swd_sink is not None:
        ref.swd = swd_sink.descriptors()
        ref.counts["swd"] = swd_sink.seen
    if image_sink is not None:  # the real figures of the image-subset metrics (seams_real, ...)
        ref.images = image_sink.images()
        subset = ref.images[:seams]
        _image_values(ref.values, subset, metrics, coords.micro, "_real", ref.counts)
        if "colour" in metrics:  # real vs real: the first half against the second
            half = subset.shape[0] // 2
            ref.values["colour_real"] = colour_distance(subset[:half], subset[half:2 * half])
        if coords.cyclic:  # spread and likeness of the reals as trained on (N11); wrap unrolled
            rolled = roll_each(subset, real_rolls(subset.shape[0], coords))
            layout = tuple(m for m in ("spread", "likeness") if m in metrics)
            _image_values(ref.values, rolled, layout, coords.micro, "_real", ref.counts)
        if "spatial" in metrics:
            ref.counts["spatial"] = min(ref.images.shape[0], spatial)
    return ref


def real_rolls(count: int, coords: CoordinateSystem) -> Tensor:
    """Fixed-seed horizontal shifts (count,) of the first real panoramas: training sees each at a
    uniform random roll, so FID, KID, SWD, spread and likeness compare with reals rolled so."""
    width = coords.grid_w * coords.micro
    return torch.randint(width, (count,), generator=torch.Generator().manual_seed(ROLL_SEED))


def roll_each(images: Tensor, shifts: Tensor) -> Tensor:
    """Image b (B, C, H, W) rolled right by shifts[b] pixels."""
    return torch.stack([torch.roll(x, int(k), dims=-1) for x, k in zip(images, shifts,
                                                                        strict=True)])


class RolledSink(Sink):
    """Hands ``inner`` each image rolled by its shift (the shifts follow the stream order)."""

    def __init__(self, inner: Sink, shifts: Tensor) -> None:
        super().__init__(inner.limit)
        self.inner, self.shifts = inner, shifts

    def _consume(self, images: Tensor) -> None:
        self.inner.update(roll_each(images, self.shifts[self.seen:self.seen + images.shape[0]]))


def _image_values(values: dict[str, float], images: Tensor, metrics: tuple[str, ...],
                  micro: int, suffix: str, counts: dict[str, int]) -> None:
    """The IMAGE_METRICS of one side's images; ``suffix`` "_real" for the real side."""
    if "seams" in metrics:
        values[f"seams{suffix}"] = seam_ratio(images, micro)
        values[f"seams_object{suffix}"] = object_seam_ratio(images, micro)
        values.update({f"seams_{k}{suffix}": v for k, v in seam_profile(images, micro).items()})
    measures = {"wrap": wrap_ratio, "spread": content_spread,
                "repeat": lambda x: repetition(x, micro), "likeness": likeness}
    for name, measure in measures.items():
        if name in metrics:
            values[f"{name}{suffix}"] = measure(images)
    counts.update({m: images.shape[0] for m in IMAGE_METRICS if m in metrics})


@dataclass
class Evaluation:
    """Metric values and the image counts behind them."""

    values: dict[str, float]
    generated: dict[str, int]  # generated images per metric
    real: dict[str, int]  # real images per metric


def evaluate(ref: Reference, cfg: EvalConfig, *, sample: Sampler | None = None,
             predictor: Predictor | None = None, extractor: FeatureExtractor | None = None,
             only: tuple[str, ...] | None = None, progress: bool = False) -> Evaluation:
    """Generated-side stages and the final numbers against `ref` (image i's latent depends only
    on cfg.seed): `sample` serves every metric but spatial, `predictor` (D's spatial head)
    spatial; `extractor` must be the reference's; `only` keeps a subset of ref's metrics."""
    metrics = tuple(m for m in ref.metrics if only is None or m in only)
    # a value's metric: seams_x16_real -> seams, wrap_real -> wrap
    values = {k: v for k, v in ref.values.items()
              if k.removesuffix("_real").split("_")[0] in metrics}
    generated: dict[str, int] = {}
    features = cfg.n if any(m in FEATURE_METRICS for m in metrics) else None
    images = min(cfg.n, cfg.seam_images) if any(m in IMAGE_METRICS for m in metrics) else 0
    feature_sink, swd_sink, image_sink = _sinks(metrics, cfg, extractor, features, images)
    sinks: list[Sink] = [s for s in (feature_sink, swd_sink, image_sink) if s is not None]
    if sinks and sample is None:
        raise ValueError(f"metrics {', '.join(metrics)} need a generator")
    what = "generated images (the generator's weights are not finite: a diverged or damaged " \
           "checkpoint; evaluate an earlier one)"
    feed(sinks, lambda limit: generated_batches(sample, limit, cfg.batch, cfg.seed), what,
         progress, "generated images")
    if feature_sink is not None:  # FID from the Gaussian summaries; KID, P/R from the kept rows
        assert ref.features is not None, "reference lacks FID statistics"
        fake_stats, fake = feature_sink.accumulator.stats(), feature_sink.accumulator.features()
        if "fid" in metrics:
            values["fid"] = fid_from_stats(fake_stats, ref.features.stats)
        _pr_values(values, ref.features.kept, fake, metrics, "")
        if "kid" in metrics:
            values["kid"], values["kid_std"] = kernel_inception_distance(
                fake, ref.features.kept, subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size,
                seed=cfg.seed)
        generated.update({m: fake_stats.n if m == "fid" else fake.shape[0]  # eval.json's order
                          for m in ("fid", *PR_METRICS, "kid") if m in metrics})
    if swd_sink is not None:
        assert ref.swd is not None, "reference lacks SWD descriptors"
        swd = sliced_wasserstein_from_descriptors(ref.swd, swd_sink.descriptors(), seed=cfg.seed)
        values["swd"] = float(swd["mean"])
        height = ref.coords.grid_h * ref.coords.micro  # swd_<h>: the level's image height
        values.update({f"swd_{height >> i}": float(level) for i, level in enumerate(swd["levels"])})
        generated["swd"] = swd_sink.seen
    if image_sink is not None:
        kept = image_sink.images()  # one decode of the 8-bit images for every image metric
        _image_values(values, kept, metrics, ref.coords.micro, "", generated)
        if "colour" in metrics and ref.images is not None:  # vs the half colour_real did not use
            h = min(cfg.n, cfg.seam_images, ref.images.shape[0]) // 2
            values["colour"] = colour_distance(kept[:h], ref.images[h:2 * h])
    if "spatial" in metrics:
        if predictor is None or ref.images is None:
            raise ValueError("the spatial metric needs the model's discriminator")
        result = spatial_accuracy(predictor, ref.coords,
                                  ref.images[: min(cfg.n, cfg.spatial_images)].split(cfg.batch))
        values.update(result.values())
    return Evaluation(values=values, generated=generated,
                      real={k: v for k, v in ref.counts.items() if k in metrics})


def _pr_values(values: dict[str, float], real: ArrayLike, fake: ArrayLike,
               metrics: tuple[str, ...], suffix: str) -> None:
    """Precision and recall (k = 3) of ``fake`` against ``real`` feature rows, if asked for."""
    if any(m in PR_METRICS for m in metrics):
        pair = dict(zip(PR_METRICS, precision_recall(real, fake), strict=True))
        values.update({f"{m}{suffix}": v for m, v in pair.items() if m in metrics})
