"""Metric families, each a pure compute function behind a thin sampler."""

# What people read first about a candidate: bundle manifests and registry tags carry these.
HEADLINE = (
    "recall_at_far",
    "recall_at_far_lo",  # bootstrap 95% interval of the recall (metrics.bootstrap)
    "recall_at_far_hi",
    "image_auroc",
    "pixel_auroc",
    "elbo",
    "observed_far",
    "latency_p95_b1_ms",
)
