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

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from torch import nn

from edgecomp.errors import EdgecompError, UserInputError
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
        module = _import_file(Path(target).expanduser())
    else:
        module = _import_module(target)
    factory = _resolve_attr(module, attr, spec)
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


def _import_file(path: Path) -> ModuleType:
    """Import a .py file by path under a private module name, without touching sys.path."""
    if path.suffix.lower() != ".py":
        raise UserInputError(f"model file must be a .py file: {path}")
    if not path.is_file():
        raise UserInputError(f"model file not found: {path}")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"_edgecomp_user_model_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise UserInputError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered so dataclasses, typing and pickling can find the module by name (not sys.path).
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        hint = ""
        if isinstance(exc, ImportError):
            hint = (" (files are imported by path and sibling modules are not importable; make it a "
                    "package and use the package.module:Factory form with PYTHONPATH set)")
        raise UserInputError(f"importing {path} failed: {_describe(exc)}{hint}") from exc
    return module


def _import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UserInputError(
                f"no module named {name!r} (for a file use path/to/file.py:Factory; for a module, "
                "make sure it is installed or on PYTHONPATH)"
            ) from exc
        raise UserInputError(f"importing {name} failed: {_describe(exc)}") from exc
    except Exception as exc:
        raise UserInputError(f"importing {name} failed: {_describe(exc)}") from exc


def _resolve_attr(module: ModuleType, attr: str, spec: str) -> Any:
    obj: Any = module
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            raise UserInputError(
                f"{spec!r}: {attr!r} not found in {_module_label(module)}; candidates: {_candidates(module) or 'none'}"
            )
        obj = getattr(obj, part)
    return obj


def _candidates(module: ModuleType) -> str:
    """Classes and functions defined in `module` that could be factories."""
    names = [
        n for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or (inspect.isclass(v) and issubclass(v, nn.Module)))
        and getattr(v, "__module__", None) == module.__name__
    ]
    return ", ".join(sorted(names)[:10])


def _module_label(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__


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
    try:
        built = factory()
    except EdgecompError:
        raise
    except Exception as exc:
        raise UserInputError(f"building the model with {spec!r} failed: {_describe(exc)}") from exc
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


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


__all__ = ["LoadedModel", "load_model", "load_weights", "save_weights", "read_state_dict", "SPEC_FORMS"]
