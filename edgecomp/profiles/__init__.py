"""Device profiles: what a target runs (runtime, precisions), how fast (peak MAC/s x efficiency),
what a model must fit (latency / MAC / memory budgets) and how to reach it (local, ssh, adb).

Profiles are YAML files in `profiles_dir()` (one per device; see device_profiles/ and
`edgecomp.profiles.schema.PROFILE_SCHEMA`).
"""

from edgecomp.profiles.loader import list_profiles, load_profile, profiles_dir, read_profile
from edgecomp.profiles.profile import Budgets, DeviceProfile, TargetSpec
from edgecomp.profiles.schema import PROFILE_SCHEMA, validate_profile_data
from edgecomp.profiles.units import (
    format_bytes,
    format_count,
    parse_bytes,
    parse_count,
    parse_mac_budget,
    parse_memory_budget,
)

__all__ = [
    "BYTES_PER_PARAM",
    "Budgets",
    "DeviceProfile",
    "PROFILE_SCHEMA",
    "TargetSpec",
    "format_bytes",
    "format_count",
    "list_profiles",
    "load_profile",
    "parse_bytes",
    "parse_count",
    "parse_mac_budget",
    "parse_memory_budget",
    "profiles_dir",
    "read_profile",
    "validate_profile_data",
]


def __getattr__(name: str):
    # BYTES_PER_PARAM is the cost model's (edgecomp.graph.cost), which imports torch: only when asked for.
    if name == "BYTES_PER_PARAM":
        from edgecomp.graph.cost import BYTES_PER_PARAM

        return BYTES_PER_PARAM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
