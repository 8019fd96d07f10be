"""Turn a model spec string into a built nn.Module (plus its weights).

Spec forms accepted by `load_model`:

    zoo:NAME                    a zoo architecture (`edgecomp zoo` / `list_zoo()`); bare NAME too
    path/to/file.py:Factory     a class or function in a Python file, imported by path
    package.module:Factory      a class or function in an importable module
    path/to/model.pt            a FULL pickled model (torch.save(model)): refused unless
                                trust_pickle=True, because unpickling runs code from the file

`Factory` may be dotted (`module:Outer.build`); it must be a class or function callable with no
arguments that returns an nn.Module. Its (or the built module's) attributes `input_shape` and
`num_classes`, when present, are reported in the LoadedModel.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgecomp.imports import call_user_code, import_file, import_module, resolve_attr
from edgecomp.errors import UserInputError
from edgecomp.models.weights import (
    PICKLE_SUFFIXES,
    SAFETENSORS_SUFFIX,
    load_weights,
    extract_state_dict,
    read_state_dict,
    save_weights,
    torch_load,
)
from edgecomp.models.zoo import ZOO, get_entry

SPEC_FORMS = "zoo:NAME, path/to/file.py:Factory, package.module:Factory, or a pickled model path/to/model.pt"


IN_MEMORY = "<in-memory "  # the label of a model the Python API was handed as an nn.Module (no spec rebuilds it)


def in_memory_label(module: nn.Module) -> str:
    return f"{IN_MEMORY}{type(module).__name__}>"


def is_in_memory(spec: str | None) -> bool:
    return isinstance(spec, str) and spec.startswith(IN_MEMORY)


@dataclass
class LoadedModel:
    """A built model (in eval mode) and what is known about it."""

    module: nn.Module
    spec: str
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    weights: str | None = None
    recipe: dict | None = None  # set for a compressed model rebuilt from an OUTDIR


def load_model(spec: str, weights: str | os.PathLike | None = None, *, trust_pickle: bool = False) -> LoadedModel:
    """Build the model named by `spec`, load `weights` into it (strictly), and put it in eval mode."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"empty model spec; expected {SPEC_FORMS}")
    spec = spec.strip()
    module, input_shape, num_classes = _build(spec, trust_pickle)
    if weights is not None:
        load_weights(module, weights, trust_pickle=trust_pickle)
    module.eval()
    return LoadedModel(
        module=module,
        spec=spec,
        input_shape=input_shape,
        num_classes=num_classes,
        weights=None if weights is None else str(weights),
    )


def spec_kind(spec: str) -> str:
    """What building `spec` runs: "zoo" (edgecomp's own code only), "pickle" (a .pt/.pth/.bin file:
    unpickling it may run code from the file), "file" (a weights or ONNX file: refused, nothing runs) or
    "code" (a user's .py file or module: importing and calling it runs that code)."""
    spec = spec.strip()
    if spec.startswith("zoo:"):
        return "zoo"
    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if suffix in (SAFETENSORS_SUFFIX, ".onnx"):
        return "file"
    if spec in ZOO and not path.exists():
        return "zoo"
    return "code"


def _build(spec: str, trust_pickle: bool) -> tuple[nn.Module, tuple[int, ...] | None, int | None]:
    if spec.startswith("zoo:"):
        entry = get_entry(spec[len("zoo:"):])
        return entry.factory(), entry.input_shape, entry.num_classes

    path = Path(spec).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES or suffix == SAFETENSORS_SUFFIX or suffix == ".onnx":
        return _load_pickled_model(path, trust_pickle)

    if spec in ZOO and not path.exists():
        entry = ZOO[spec]
        return entry.factory(), entry.input_shape, entry.num_classes

    # rpartition: the factory name never contains ':', a Windows drive letter may.
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        if suffix == ".py":
            raise UserInputError(f"name the factory in {spec!r}: use {spec}:ClassOrFunction")
        raise UserInputError(f"cannot understand model spec {spec!r}; expected {SPEC_FORMS}")
    if target.lower().endswith(".py") or os.sep in target or "/" in target:
        module = import_file(Path(target).expanduser())
    else:
        module = import_module(target)
    factory = resolve_attr(module, attr, spec, candidate=_could_build_module)
    built = _call_factory(factory, spec)
    return built, _input_shape(factory, built, spec), _num_classes(factory, built)


def _load_pickled_model(path: Path, trust_pickle: bool) -> tuple[nn.Module, tuple[int, ...] | None, int | None]:
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserInputError(f"model file not found: {path}")
    if suffix == ".onnx":
        raise UserInputError(
            f"{path} is an ONNX model; edgecomp compresses PyTorch models: give the PyTorch model spec "
            "(e.g. `my_model.py:Net --weights weights.pt`)"
        )
    if suffix == SAFETENSORS_SUFFIX:
        raise UserInputError(
            f"{path} holds weights only, not an architecture; give a model spec and pass the file as "
            f"weights, e.g. `my_model.py:Net --weights {path.name}`"
        )
    # Tries a restricted (safe) load first; that also tells a state dict apart from a full model.
    obj = torch_load(path, trust_pickle=trust_pickle)
    if isinstance(obj, nn.Module):
        return obj, _shape_attr(obj, str(path)), _int_attr(obj, "num_classes")
    try:
        extract_state_dict(obj, path)
    except UserInputError:
        raise UserInputError(f"{path} does not hold a pickled nn.Module (found {type(obj).__name__})") from None
    raise UserInputError(
        f"{path} holds a state dict, not a model; give the architecture as the model spec and this file "
        f"as weights, e.g. `my_model.py:Net --weights {path.name}` or `zoo:NAME --weights {path.name}`"
    )


def _could_build_module(value) -> bool:
    return inspect.isfunction(value) or (inspect.isclass(value) and issubclass(value, nn.Module))


def _call_factory(factory: Any, spec: str) -> nn.Module:
    if isinstance(factory, nn.Module):
        raise UserInputError(
            f"{spec!r} is an nn.Module instance, not a factory; name its class or a function that builds it"
        )
    if inspect.isclass(factory) and not issubclass(factory, nn.Module):
        raise UserInputError(f"{spec!r} is the class {factory.__name__}, which is not a torch.nn.Module subclass")
    if not callable(factory):
        raise UserInputError(f"{spec!r} is a {type(factory).__name__}, not a class or function returning an nn.Module")
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise UserInputError(f"factory {spec!r} must be callable with no arguments: {exc}") from None
    except ValueError:
        pass  # no introspectable signature; just call it
    built = call_user_code(factory, f"building the model with {spec!r}",
                           exit_hint="; a model factory must return an nn.Module")
    if not isinstance(built, nn.Module):
        raise UserInputError(f"factory {spec!r} returned a {type(built).__name__}, not a torch.nn.Module")
    return built


def _input_shape(factory: Callable, built: nn.Module, spec: str) -> tuple[int, ...] | None:
    shape = _shape_attr(factory, spec)
    return shape if shape is not None else _shape_attr(built, spec)


def _shape_attr(obj: Any, spec: str) -> tuple[int, ...] | None:
    value = getattr(obj, "input_shape", None)
    if value is None:
        return None
    try:
        shape = tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise UserInputError(f"{spec!r}: attribute input_shape must be a sequence of ints, got {value!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise UserInputError(f"{spec!r}: attribute input_shape must have positive dimensions, got {value!r}")
    return shape


def _num_classes(factory: Callable, built: nn.Module) -> int | None:
    value = _int_attr(factory, "num_classes")
    return value if value is not None else _int_attr(built, "num_classes")


def _int_attr(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


__all__ = ["LoadedModel", "load_model", "spec_kind", "load_weights", "save_weights", "read_state_dict", "SPEC_FORMS"]
