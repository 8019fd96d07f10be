"""torchrun's environment: which rank this process is, of how many (WORLD_SIZE, RANK, LOCAL_RANK)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from edgecomp.errors import UserInputError


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int


def _int(name: str, default: int | None = None) -> int | None:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise UserInputError(f"environment variable {name}={text!r} is not an integer (set by torchrun)") from None


def launch_env() -> LaunchEnv | None:
    """The ranks torchrun (or any launcher setting WORLD_SIZE/RANK) gave this process; None outside one."""
    world = _int("WORLD_SIZE")
    if world is None:
        return None
    rank = _int("RANK", 0)
    local = _int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise UserInputError(f"inconsistent launcher environment: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return LaunchEnv(rank=rank, world_size=world, local_rank=local)
