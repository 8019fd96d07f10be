"""Device profiles for the API: a name, an alias, a YAML path or a DeviceProfile."""

from __future__ import annotations

import os

from edgecomp.profiles import DeviceProfile, list_profiles, load_profile


__all__ = ["DeviceProfile", "as_profile", "list_profiles", "load_profile"]


def as_profile(device: str | os.PathLike | DeviceProfile | None, *, required: bool = True) -> DeviceProfile | None:
    """`device` as a DeviceProfile: a built-in name or alias ("jetson"), a path to a YAML file, or a profile."""
    if device is None:
        if required:
            from edgecomp.errors import UserInputError

            raise UserInputError("no device: pass device='jetson' (see edgecomp.list_profiles()) or a profile")
        return None
    if isinstance(device, DeviceProfile):
        return device
    return load_profile(os.fspath(device))
