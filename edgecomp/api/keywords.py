"""Keyword arguments passed through to a library function, checked by its signature first, so that a
misspelt option is one clear UserInputError rather than a TypeError from deep inside."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from edgecomp.errors import UserInputError


def keywords_checked(function: Callable, what: str, *args: Any, **kwargs: Any) -> Any:
    """function(*args, **kwargs), after checking the keywords against its signature."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the call decide
        return function(*args, **kwargs)
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(kwargs) - set(parameters))
        if unknown:
            known = ", ".join(name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty)
            raise UserInputError(f"{what}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                                 f"the options are {known}")
    return function(*args, **kwargs)
