"""Image-quality metrics as staged pure functions: images -> features -> statistics -> number.
Wiring generators and runs to them lives in `cocogan.evaluation`; nothing is downloaded.
"""

from cocogan.metrics.frechet import (
    FeatureStats,
    StatsAccumulator,
    fid_from_stats,
    frechet_distance,
    kernel_inception_distance,
    mmd2_unbiased,
)
from cocogan.metrics.inception import (
    FID_WEIGHTS_NAME,
    WEIGHTS_ENV,
    FeatureExtractor,
    InceptionFeatures,
    MissingWeightsError,
    load_fid_inception,
    resolve_inception_weights,
)
from cocogan.metrics.layout import colour_distance, content_spread, likeness, repetition
from cocogan.metrics.precision_recall import precision_recall
from cocogan.metrics.seams import object_seam_ratio, seam_profile, seam_ratio, wrap_ratio
from cocogan.metrics.swd import (
    sliced_wasserstein,
    sliced_wasserstein_from_descriptors,
    swd_descriptors,
)

# Metric names (the CLI's choices) -> one-line help.
METRICS: dict[str, str] = {
    "fid": "Fréchet Inception Distance on Inception-v3 pool3 features (TTUR weights)",
    "kid": "Kernel Inception Distance: unbiased cubic-kernel MMD^2 on pool3, mean ± std",
    "swd": "multi-scale sliced Wasserstein distance on Laplacian-pyramid 7x7 patches, x1e3 (PGGAN)",
    "seams": "pixel jumps across micro-patch borders / jumps elsewhere (1 = seamless); also "
             "seams_object: the same on object pixels only (away from the flat ground)",
    "wrap": "jump between last and first column / interior column jumps (1 = cyclic panorama)",
    "spread": "RMS distance of the content centres from their mean (compare with real)",
    "repeat": "correlation of the image with itself one micro patch to the right (tiles: 1)",
    "likeness": "mean layout similarity of two different images (all in one layout: high)",
    "colour": "Fréchet distance of per-image channel means and stds, x1e3 (palette, contrast)",
    "precision": "fraction of generated pool3 features inside the real k=3 NN manifold (fidelity)",
    "recall": "fraction of real pool3 features inside the generated k=3 NN manifold (diversity)",
    "spatial": "spatial-consistency check of patches generated at coordinates (computed elsewhere)",
}

__all__ = [
    "FID_WEIGHTS_NAME", "METRICS", "WEIGHTS_ENV", "FeatureExtractor", "FeatureStats",
    "InceptionFeatures", "MissingWeightsError", "StatsAccumulator", "colour_distance",
    "content_spread", "fid_from_stats", "frechet_distance", "kernel_inception_distance", "likeness",
    "load_fid_inception", "mmd2_unbiased", "object_seam_ratio", "precision_recall", "repetition",
    "resolve_inception_weights", "seam_profile", "seam_ratio", "sliced_wasserstein",
    "sliced_wasserstein_from_descriptors", "swd_descriptors", "wrap_ratio",
]
