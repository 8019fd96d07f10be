"""Find, read and validate device profile YAML files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from edgecomp.errors import UserInputError
from edgecomp.profiles.profile import DeviceProfile
from edgecomp.profiles.schema import display_path, validate_profile_data

ENV_DIR = "EDGECOMP_PROFILES_DIR"


class _ProfileYamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as 10e12 (YAML 1.1 demands a dot: 10.0e+12),
    and rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_ProfileYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def profiles_dir() -> Path:
    """$EDGECOMP_PROFILES_DIR if set, else the built-in profiles: the package edgecomp.device_profiles
    (the repository's top-level device_profiles/, installed inside edgecomp by the wheel)."""
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    import edgecomp.device_profiles

    return Path(edgecomp.device_profiles.__file__).resolve().parent


def read_profile(path: str | os.PathLike) -> DeviceProfile:
    """Load and validate one profile file."""
    path = Path(path)
    where = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserInputError(f"{where}: device profile file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{where}: cannot read device profile: {exc}") from None
    try:
        data = yaml.load(text, Loader=_ProfileYamlLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserInputError(f"{where}: invalid YAML: {exc}") from None
    validate_profile_data(data, path)
    try:
        return DeviceProfile.from_dict(data, source=path)
    except UserInputError as exc:
        raise UserInputError(f"{where}: {exc}") from None


def _profile_files() -> list[Path]:
    directory = profiles_dir()
    if not directory.is_dir():
        raise UserInputError(
            f"device profile directory {directory} does not exist (set ${ENV_DIR} to a folder of *.yaml profiles)"
        )
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _check_unique(profiles: list[DeviceProfile]) -> None:
    owner: dict[str, DeviceProfile] = {}
    for profile in profiles:
        for key in (profile.name, *profile.aliases):
            other = owner.get(key.lower())
            if other is not None and other is not profile:
                raise UserInputError(
                    f"device name/alias {key!r} is used by both {display_path(other.source)} "
                    f"and {display_path(profile.source)}"
                )
            owner[key.lower()] = profile


def list_profiles() -> list[DeviceProfile]:
    """Every profile in profiles_dir(), sorted by name; a broken file raises UserInputError."""
    profiles = [read_profile(path) for path in _profile_files()]
    _check_unique(profiles)
    return sorted(profiles, key=lambda p: p.name)


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or os.sep in text or "/" in text


def load_profile(name_or_path: str) -> DeviceProfile:
    """A profile by name, alias (case-insensitive) or path to a .yaml file."""
    text = str(name_or_path).strip()
    if not text:
        raise UserInputError("empty device name")
    if _looks_like_path(text) or (Path(text).is_file() and not (profiles_dir() / f"{text}.yaml").exists()):
        return read_profile(text)

    key = text.lower()
    files = _profile_files()
    # Fast path: the file named after the device; a broken unrelated profile does not block it.
    for path in files:
        if path.stem.lower() == key:
            profile = read_profile(path)
            if profile.name.lower() == key or key in (a.lower() for a in profile.aliases):
                return profile

    found, names, broken = [], [], []
    for path in files:
        try:
            profile = read_profile(path)
        except UserInputError:
            broken.append(display_path(path))
            continue
        names.append(profile.name + (f" ({', '.join(profile.aliases)})" if profile.aliases else ""))
        if profile.name.lower() == key or key in (a.lower() for a in profile.aliases):
            found.append(profile)
    if len(found) > 1:
        _check_unique(found)
    if found:
        return found[0]
    message = f"unknown device {text!r}; available: {', '.join(sorted(names)) or 'none'}"
    if broken:
        message += f" (could not read: {', '.join(broken)}; run `edgecomp devices` to see why)"
    raise UserInputError(message + f". Profiles live in {profiles_dir()}; or pass a .yaml path.")
