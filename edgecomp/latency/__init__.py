"""Per-layer latency measurements kept between runs (issue 14: never slower, layer by layer).

keys.py says what a measurement depends on (where it really ran, the runtime and its version, providers,
precision, threads, batch, the layer's shape, scheme and rank); cache.py keeps one JSON entry per
measurement in a per-user cache directory. edgecomp.pipeline.latency_table measures through it and
edgecomp.ranks.latency turns the measurements into the never-slower rule. See docs/latency.md.
"""

from edgecomp.latency.cache import LatencyCache, cache_root
from edgecomp.latency.keys import MeasurementContext, entry_key, host_identity, layer_shape, measured_where

__all__ = ["LatencyCache", "MeasurementContext", "cache_root", "entry_key", "host_identity", "layer_shape",
           "measured_where"]
