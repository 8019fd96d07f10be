"""Import user code named by a spec: `path/to/file.py:attr` (by path, without touching sys.path)
or `package.module:attr`. Shared by model factories and dataset callables."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from edgecomp.errors import EdgecompError, UserInputError


def describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def user_code_error(exc: BaseException, what: str, hint: str = "", exit_hint: str = "") -> UserInputError:
    """The UserInputError for an exception user code raised while doing `what` (e.g. "importing x.py").

    sys.exit() in user code is a failure too (never a success): a gate must not pass because user
    code exited. `hint` follows an ordinary failure's message, `exit_hint` a sys.exit().
    """
    if isinstance(exc, SystemExit):
        return UserInputError(f"{what} failed: the code called sys.exit({exc.code!r}){exit_hint}")
    return UserInputError(f"{what} failed: {describe(exc)}{hint}")


def call_user_code(func, what: str, exit_hint: str = "", hint: str = ""):
    """func(), where func is user code: whatever it raises (sys.exit() included) becomes a UserInputError
    naming `what`; EdgecompError and KeyboardInterrupt pass through unchanged."""
    try:
        return func()
    except (EdgecompError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # SystemExit too: user code must not end the command
        raise user_code_error(exc, what, hint=hint, exit_hint=exit_hint) from exc


def import_file(path: Path, kind: str = "model") -> ModuleType:
    """Import a .py file by path under a private module name, without touching sys.path."""
    if path.suffix.lower() != ".py":
        raise UserInputError(f"{kind} file must be a .py file: {path}")
    if not path.is_file():
        raise UserInputError(f"{kind} file not found: {path}")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:10]
    name = f"_edgecomp_user_{kind}_{''.join(c if c.isalnum() else '_' for c in path.stem)}_{digest}"
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
        if isinstance(exc, (KeyboardInterrupt, EdgecompError)):
            raise
        hint = ""
        if isinstance(exc, ImportError):
            hint = (" (files are imported by path and sibling modules are not importable; make it a "
                    "package and use the package.module:Factory form with PYTHONPATH set)")
        raise user_code_error(exc, f"importing {path}", hint,
                              exit_hint="; guard its script code with `if __name__ == '__main__':`") from exc
    return module


def import_module(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise UserInputError(
                f"no module named {name!r} (for a file use path/to/file.py:Factory; for a module, "
                "make sure it is installed or on PYTHONPATH)"
            ) from exc
        raise UserInputError(f"importing {name} failed: {describe(exc)}") from exc
    except (KeyboardInterrupt, EdgecompError):
        raise
    except BaseException as exc:  # SystemExit too: importing user code must not end the command
        raise user_code_error(exc, f"importing {name}") from exc


def resolve_attr(module: ModuleType, attr: str, spec: str, candidate=None) -> Any:
    """module.attr (dotted); a missing name lists the module's candidates (`candidate(value)` filters them)."""
    obj: Any = module
    for part in attr.split("."):
        if not part.isidentifier() or not hasattr(obj, part):
            raise UserInputError(
                f"{spec!r}: {attr!r} not found in {module_label(module)}; candidates: {candidates(module, candidate) or 'none'}"
            )
        obj = getattr(obj, part)
    return obj


def candidates(module: ModuleType, keep=None) -> str:
    """Classes and functions defined in `module` (what a spec could name), filtered by `keep`."""
    names = [
        n for n, v in vars(module).items()
        if not n.startswith("_")
        and (inspect.isfunction(v) or inspect.isclass(v))
        and (keep is None or keep(v))
        and getattr(v, "__module__", None) == module.__name__
    ]
    return ", ".join(sorted(names)[:10])


def module_label(module: ModuleType) -> str:
    return getattr(module, "__file__", None) or module.__name__
