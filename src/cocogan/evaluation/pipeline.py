"""The evaluation pipeline: a reference computed once from real images, then any number of
evaluations of generated images against it (one for `cocogan eval`, one every K training steps).
The result is a flat dict of floats (fid, kid, kid_std, swd, swd_<h>, seams, seams_real, ...;
docs/evaluation.md, "The metrics", lists every key). Shapes: B batch, C/H/W image.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cocogan.coords import CoordinateSystem
from cocogan.evaluation.cache import (
    RealFeatures,
    load_real_features,
    save_real_features,
    stats_key,
)
from cocogan.evaluation.sampling import Sampler, generated_batches, real_batches
from cocogan.evaluation.settings import FEATURE_METRICS, EvalConfig
from cocogan.evaluation.sinks import FeatureSink, ImageSink, Sink, SWDSink, feed
from cocogan.evaluation.spatial import Predictor, spatial_accuracy
from cocogan.metrics import (
    FeatureExtractor,
    FeatureStats,
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
    wrap_ratio,
)
from cocogan.metrics.frechet import ArrayLike, NonFiniteError


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


IMAGE_METRICS = ("seams", "wrap", "spread", "repeat", "likeness")  # on a subset of kept images
PR_METRICS = ("precision", "recall")  # from the feature rows kept for KID
ROLL_SEED = 0  # the real panoramas' rolls (N11); fixed, so cached statistics stay valid


def _metric_of(key: str) -> str:
    """The metric a value key belongs to: seams_x16_real -> seams, wrap_real -> wrap."""
    return key.removesuffix("_real").split("_")[0]


def _seam_count(cfg: EvalConfig) -> int:
    """Images per side for seams/wrap: a subset, never more than --n."""
    return min(cfg.n, cfg.seam_images)


def _spatial_count(cfg: EvalConfig) -> int:
    """Real images whose macro patches go through the spatial head, never more than --n."""
    return min(cfg.n, cfg.spatial_images)


def _finite(batches: Iterable[Tensor], what: str) -> Iterator[Tensor]:
    """The batches, checked: a NaN image would make every statistic NaN (and once hung FID)."""
    for images in batches:
        if not torch.isfinite(images).all():
            raise NonFiniteError(f"{what} hold NaN or infinity")
        yield images


def _bar(progress: bool, total: int, desc: str) -> contextlib.AbstractContextManager:
    """A tqdm bar on stderr when `progress`, else a context that reports nothing."""
    if not progress:
        return contextlib.nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True)


def _feature_sink(extractor: FeatureExtractor, limit: int, cfg: EvalConfig) -> FeatureSink:
    return FeatureSink(extractor, limit, keep=min(limit, cfg.kid_features))


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
    """Every real-side stage the validated `metrics` need, in one pass over a fixed subset of
    `dataset` (real full images at the run's size). `fingerprint` (`dataset_fingerprint` of
    the source) enables the statistics cache; `progress` shows a bar on stderr."""
    if "wrap" in metrics and not coords.cyclic:
        raise ValueError("--metrics wrap needs a cylindrical (panorama) run; this run uses "
                         "cartesian coordinates: drop wrap")
    if any(m in FEATURE_METRICS for m in metrics) and extractor is None:
        raise ValueError("fid/kid need a feature extractor (the Inception network)")
    ref = Reference(metrics=metrics, coords=coords)
    key, feature_sink = None, None
    if any(m in FEATURE_METRICS for m in metrics):
        count = min(cfg.n, len(dataset))  # type: ignore[arg-type]
        key = reference_key(dataset, cfg, extractor, fingerprint)
        if key is not None:
            ref.features = load_real_features(key)
            ref.cache_hit = ref.features is not None
        if ref.features is None:
            feature_sink = _feature_sink(extractor, count, cfg)
    swd_sink = SWDSink(min(cfg.n, cfg.swd_images), cfg.swd_descriptors, cfg.seed) \
        if "swd" in metrics else None
    keep = max([_seam_count(cfg) for m in IMAGE_METRICS if m in metrics]
               + [_spatial_count(cfg) for m in ("spatial",) if m in metrics] + [0])
    image_sink = ImageSink(keep) if keep else None
    sinks: list[Sink] = [s for s in (feature_sink, swd_sink) if s is not None]
    if sinks and coords.cyclic:  # N11: the distribution metrics see the reals as trained on
        sinks = [RolledSink(s, real_rolls(s.limit, coords)) for s in sinks]
    sinks += [image_sink] if image_sink is not None else []
    if sinks:
        limit = max(s.limit for s in sinks)
        with _bar(progress, limit, "real images") as bar:
            feed(_finite(real_batches(dataset, limit, cfg.batch), "real images"), sinks, bar)
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
    if image_sink is not None:
        ref.images = image_sink.images()
        _real_image_values(ref, cfg)
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


def _real_image_values(ref: Reference, cfg: EvalConfig) -> None:
    """The real figures of the image-subset metrics (seams_real, ...) and their counts."""
    assert ref.images is not None
    subset = ref.images[: _seam_count(cfg)]
    _image_values(ref.values, subset, ref.metrics, ref.coords.micro, "_real", ref.counts)
    if ref.coords.cyclic:  # spread and likeness of the reals as trained on (N11); wrap unrolled
        rolled = roll_each(subset, real_rolls(subset.shape[0], ref.coords))
        layout = tuple(m for m in ("spread", "likeness") if m in ref.metrics)
        _image_values(ref.values, rolled, layout, ref.coords.micro, "_real", ref.counts)
    if "spatial" in ref.metrics:
        ref.counts["spatial"] = min(ref.images.shape[0], _spatial_count(cfg))


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
    """Generated-side stages and the final numbers against `ref` (the latents of image i depend
    only on cfg.seed). `sample` (full images) serves every metric but spatial, `predictor` (D's
    spatial head) spatial; `extractor` must be the reference's; `only` keeps a subset of the
    reference's metrics (e.g. no spatial for a model without D)."""
    metrics = tuple(m for m in ref.metrics if only is None or m in only)
    values = {k: v for k, v in ref.values.items() if _metric_of(k) in metrics}
    generated: dict[str, int] = {}
    feature_sink = _feature_sink(extractor, cfg.n, cfg) \
        if any(m in FEATURE_METRICS for m in metrics) else None
    swd_sink = SWDSink(min(cfg.n, cfg.swd_images), cfg.swd_descriptors, cfg.seed) \
        if "swd" in metrics else None
    image_sink = ImageSink(_seam_count(cfg)) \
        if any(m in IMAGE_METRICS for m in metrics) else None
    sinks: list[Sink] = [s for s in (feature_sink, swd_sink, image_sink) if s is not None]
    if sinks:
        if sample is None:
            raise ValueError(f"metrics {', '.join(metrics)} need a generator")
        limit = max(s.limit for s in sinks)
        what = "generated images (the generator's weights are not finite: a diverged or damaged " \
               "checkpoint; evaluate an earlier one)"
        with _bar(progress, limit, "generated images") as bar:
            feed(_finite(generated_batches(sample, limit, cfg.batch, cfg.seed), what), sinks, bar)
    if feature_sink is not None:
        assert ref.features is not None, "reference lacks FID statistics"
        _feature_values(values, generated, feature_sink, ref.features, metrics, cfg)
    if swd_sink is not None:
        assert ref.swd is not None, "reference lacks SWD descriptors"
        swd = sliced_wasserstein_from_descriptors(ref.swd, swd_sink.descriptors(), seed=cfg.seed)
        values["swd"] = float(swd["mean"])
        height = ref.coords.grid_h * ref.coords.micro
        for index, level in enumerate(swd["levels"]):
            values[f"swd_{height >> index}"] = float(level)
        generated["swd"] = swd_sink.seen
    if image_sink is not None:
        _image_values(values, image_sink.images(), metrics, ref.coords.micro, "", generated)
    if "spatial" in metrics:
        if predictor is None or ref.images is None:
            raise ValueError("the spatial metric needs the model's discriminator")
        result = spatial_accuracy(predictor, ref.coords,
                                  ref.images[: _spatial_count(cfg)].split(cfg.batch))
        values.update(result.values())
    real = {k: v for k, v in ref.counts.items() if k in metrics}
    return Evaluation(values=values, generated=generated, real=real)


def _feature_values(values: dict[str, float], generated: dict[str, int], sink: FeatureSink,
                    real: RealFeatures, metrics: tuple[str, ...], cfg: EvalConfig) -> None:
    """FID from the two Gaussian summaries; KID, precision and recall from the kept rows."""
    fake_stats: FeatureStats = sink.accumulator.stats()
    if "fid" in metrics:
        values["fid"] = fid_from_stats(fake_stats, real.stats)
        generated["fid"] = fake_stats.n
    fake = sink.accumulator.features()
    _pr_values(values, real.kept, fake, metrics, "")
    generated.update({m: fake.shape[0] for m in PR_METRICS if m in metrics})
    if "kid" in metrics:
        kid, kid_std = kernel_inception_distance(fake, real.kept, subsets=cfg.kid_subsets,
                                                 subset_size=cfg.kid_subset_size,
                                                 seed=cfg.seed)
        values["kid"], values["kid_std"] = kid, kid_std
        generated["kid"] = fake.shape[0]


def _pr_values(values: dict[str, float], real: ArrayLike, fake: ArrayLike,
               metrics: tuple[str, ...], suffix: str) -> None:
    """Precision and recall (k = 3) of ``fake`` against ``real`` feature rows, if asked for."""
    if any(m in PR_METRICS for m in metrics):
        pair = dict(zip(PR_METRICS, precision_recall(real, fake), strict=True))
        values.update({f"{m}{suffix}": v for m, v in pair.items() if m in metrics})
