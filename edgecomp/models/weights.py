"""Reading and writing state dicts safely.

`.pt/.pth/.bin` files are read with `torch.load(..., weights_only=True)`, which refuses to import
or call anything named in the pickle. A file that needs more (a full pickled model, custom
classes) raises UnsafeModelError unless the caller passed `trust_pickle=True`, because
unrestricted unpickling runs arbitrary code from the file. `.safetensors` files hold raw tensors
only and are always safe. Input files are only ever opened for reading.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgecomp.errors import UnsafeModelError, UserInputError
from edgecomp.io import atomic_path

PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
# Keys under which training checkpoints commonly nest the model's state dict.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
_SHOW = 5  # how many offending keys an error message names


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise UserInputError(f"weights file not found: {p}")
    if not p.is_file():
        raise UserInputError(f"weights path is not a regular file: {p}")
    return p


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _unsafe_globals(path: Path, error: BaseException | None = None) -> list[str]:
    """Globals the pickle would import: from the zip checkpoint's index, else from the error text."""
    names: list[str] = []
    finder = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    if finder is not None:
        try:
            names = list(finder(str(path)))
        except Exception:
            names = []
    if not names and error is not None:
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
    # Deterministic order, the file's own (non-torch) classes first: they are the informative ones.
    return sorted(set(names), key=lambda n: (n.startswith("torch."), n))


def unsafe_pickle_message(path: Path, error: BaseException | None = None) -> str:
    names = _unsafe_globals(path, error)
    refs = f" (it references {', '.join(names[:_SHOW])}{', ...' if len(names) > _SHOW else ''})" if names else ""
    return (
        f"{path} contains pickled Python objects beyond tensors, such as a full model{refs}, and can only "
        "be loaded by unrestricted unpickling, which runs arbitrary code from the file. Pass --trust-pickle "
        "(trust_pickle=True) only for a file you trust. Safer: save the model's state_dict (or .safetensors) "
        "and load it with a factory spec, e.g. `my_model.py:Net --weights weights.safetensors`."
    )


def _needs_code(path: Path, exc: BaseException) -> bool:
    """True when the weights_only unpickler refused the file because it names Python objects (a GLOBAL
    or a class it does not allow): a genuine pickle that needs code. Any other refusal (an opcode it does
    not know, e.g. random bytes) means the file is not a readable checkpoint."""
    if not (isinstance(exc, pickle.UnpicklingError) and "weights only load failed" in str(exc).lower()):
        return False
    text = str(exc)
    return "GLOBAL " in text or "allowlisted" in text or bool(_unsafe_globals(path))


def corrupt_checkpoint_message(path: Path, exc: BaseException) -> str:
    reason = re.search(r"Unsupported operand \d+", str(exc)) if isinstance(exc, pickle.UnpicklingError) else None
    detail = reason.group(0) if reason else _first_line(exc)
    return f"{path} is corrupt or not a PyTorch checkpoint (torch.save file): {detail}"


def torch_load(path: str | os.PathLike, *, trust_pickle: bool = False) -> Any:
    """Load a torch.save file, restricted (weights_only=True) unless the file needs more and
    `trust_pickle` is set. Corrupt files raise UserInputError, unsafe ones UnsafeModelError."""
    p = _existing_file(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not _needs_code(p, exc):
            raise UserInputError(corrupt_checkpoint_message(p, exc)) from exc
        if not trust_pickle:
            raise UnsafeModelError(unsafe_pickle_message(p, exc)) from None
    try:
        return torch.load(p, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise UserInputError(
            f"{p} is a pickled object whose class cannot be imported here ({_first_line(exc)}); make the "
            "defining module importable (PYTHONPATH), or better, load a state dict with a factory spec"
        ) from exc
    except Exception as exc:
        raise UserInputError(f"could not unpickle {p}: {_first_line(exc)}") from exc


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict from a state dict, a checkpoint dict nesting one, or a (trusted) module."""
    if isinstance(obj, nn.Module):
        return dict(obj.state_dict())
    if isinstance(obj, Mapping):
        for key in CHECKPOINT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return dict(inner.state_dict())
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return {str(k): v for k, v in inner.items()}
        bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
        if obj and not bad:
            return {str(k): v for k, v in obj.items()}
        if not obj:
            raise UserInputError(f"{path} holds an empty dict, not a state dict")
        raise UserInputError(
            f"{path} is a dict but not a state dict: entries {bad[:_SHOW]} are not tensors, and it has no "
            f"{'/'.join(CHECKPOINT_KEYS)} entry holding one"
        )
    raise UserInputError(f"{path} holds a {type(obj).__name__}, not a state dict or model")


def read_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict stored in a .pt/.pth/.bin or .safetensors file (tensors on CPU)."""
    p = _existing_file(path)
    suffix = p.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserInputError(
                f"could not read {p} as safetensors (corrupt or truncated?): {_first_line(exc)}"
            ) from exc
    if suffix in PICKLE_SUFFIXES:
        return extract_state_dict(torch_load(p, trust_pickle=trust_pickle), p)
    raise UserInputError(
        f"unsupported weights file extension {p.suffix or '(none)'!r} for {p}; "
        f"use {', '.join(PICKLE_SUFFIXES)} (torch.save state dict) or {SAFETENSORS_SUFFIX}"
    )


def _strip_data_parallel_prefix(state: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop the `module.` prefix nn.DataParallel/DDP adds, when that is what makes the keys match."""
    prefix = "module."
    if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in expected):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _names(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str = "weights") -> None:
    """Raise UserInputError naming missing, unexpected and shape-mismatched keys (strict loading)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from the file: {_names(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected in the file: {_names(unexpected)}")
    if mismatched:
        parts.append(f"{len(mismatched)} with mismatched shapes: {_names(mismatched)}")
    raise UserInputError(
        f"{source} do not match the model ({type(module).__name__}): " + "; ".join(parts)
        + ". Check that the weights were saved from this architecture (and number of classes)."
    )


def load_weights(module: nn.Module, path: str | os.PathLike, *, trust_pickle: bool = False) -> nn.Module:
    """Load a state dict file into `module` strictly (every key, every shape) and return `module`.

    Accepts a bare state dict, a checkpoint dict with a `state_dict` / `model_state_dict` /
    `model` entry, a DataParallel-prefixed (`module.`) state dict, or (only with trust_pickle) a
    full pickled model, whose state dict is taken. The module is left untouched on any error.
    """
    p = Path(path).expanduser()
    state = read_state_dict(p, trust_pickle=trust_pickle)
    state = _strip_data_parallel_prefix(state, set(module.state_dict()))
    check_state_dict(module, state, source=f"weights in {p}")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise UserInputError(f"could not load weights from {p}: {_first_line(exc)}") from exc
    return module


def save_weights(module_or_state_dict: nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike,
                 *, metadata: Mapping[str, str] | None = None) -> Path:
    """Write a state dict to a .safetensors file atomically and return its path.

    Tensors are detached, moved to CPU and cloned contiguous, so tied (shared) parameters and
    non-contiguous views are saved as independent tensors.
    """
    p = Path(path).expanduser()
    if p.suffix.lower() != SAFETENSORS_SUFFIX:
        raise UserInputError(f"save_weights writes {SAFETENSORS_SUFFIX} files; got {p}")
    state = module_or_state_dict.state_dict() if isinstance(module_or_state_dict, nn.Module) else module_or_state_dict
    if not isinstance(state, Mapping):
        raise UserInputError(f"save_weights needs an nn.Module or a state dict, got {type(state).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserInputError(f"state dict entries are not tensors and cannot be saved: {_names(bad)}")
    tensors = {str(k): v.detach().to("cpu").clone(memory_format=torch.contiguous_format) for k, v in state.items()}
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}

    from safetensors.torch import save_file

    with atomic_path(p) as tmp:
        save_file(tensors, str(tmp), metadata=meta or None)
    return p
