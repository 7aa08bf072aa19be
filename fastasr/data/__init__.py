"""Shards → dynamically padded batches (DESIGN.md): `build_loader` and `Batch`."""

from .bucketing import DurationBuckets, PaddedSecondsBudget, geometric_edges
from .loader import Loader, build_loader
from .sample import Batch, Sample

__all__ = ["build_loader", "Batch", "Sample", "Loader", "DurationBuckets", "PaddedSecondsBudget", "geometric_edges"]
