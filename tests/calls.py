"""Counting how often a function runs, wherever a loaded module bound it (by `from m
import f` as well as `m.f`): tests/test_api.py and bench/backend.py count how many
times a compile plans and generates code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def count_calls(function: Callable[..., Any],
                patch: Callable[[Any, str, Any], None] = setattr) -> list[int]:
    """A list that grows by one per call of `function`; `patch(module, name, value)`
    rebinds each module's name (pytest's monkeypatch.setattr undoes it after a test).
    Import every module that binds `function` first: one imported later would bind the
    counter itself, for good."""
    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return function(*args, **kwargs)

    for module in list(sys.modules.values()):
        for name, value in list(vars(module).items()) if module is not None else ():
            if value is function:
                patch(module, name, counted)
    return calls
