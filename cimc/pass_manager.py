"""The pass manager: pipeline specs, pass lookup, and running passes.

A pipeline spec is a comma-separated list of pass names, each optionally
followed by options in braces: `lower,tile,place{placer=anneal,effort=0.5}`. The
target of the backend passes is the pipeline's (`parse_pipeline(spec, target)`,
`cimc opt --target`), not a pass option.
Options are the fields of the pass dataclass (`-` in a name stands for `_`).
Passes are found in `cimc.passes.PASSES` and imported on first use;
`backend_passes` configures the BACKEND pipeline of cimc/pipeline.py from a
user's BackendOptions.

`run_pipeline` applies passes in order and verifies the IR after each. What
happens between passes (timing, verification, printing the IR) is done by
callbacks, never inside the passes.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import time
import types
import typing
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from cimc.diagnostics import CimcError, end_progress, progress
from cimc.ir.module import Module
from cimc.ir.text import print_module
from cimc.ir.verifier import verify
from cimc.pass_base import BackendPass, Pass
from cimc.pipeline import BACKEND, FRONTEND, BackendOptions
from cimc.targets import Target


def registry() -> dict[str, str]:
    """Pass name -> "module:Class" (imported lazily, so new passes appear at once)."""
    from cimc import passes

    return passes.PASSES


def pass_class(name: str) -> type[Pass]:
    """The Pass subclass registered under `name`."""
    table = registry()
    if name not in table:
        raise CimcError(f"unknown pass '{name}'; valid passes: {', '.join(sorted(table))}")
    module_name, _, class_name = table[name].partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise CimcError(f"pass '{name}' cannot be loaded from {table[name]}: {exc}") from None
    return typing.cast(type[Pass], cls)


# ---- pipeline specs ------------------------------------------------------

def _split_top(text: str) -> list[str]:
    """Split at commas outside braces and brackets."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_pipeline(spec: str, target: Target | None = None) -> list[Pass]:
    """Pass instances for a spec like `lower,tile,place{placer=sequential}` ("" is no passes),
    the backend passes working for `target` (by default isaac)."""
    if spec.count("{") != spec.count("}") or spec.count("[") != spec.count("]"):
        raise CimcError(f"unbalanced braces or brackets in pipeline '{spec}'")
    result = []
    for item in _split_top(spec):
        item = item.strip()
        if not item:
            if spec.strip():
                raise CimcError(f"empty pass name in pipeline '{spec}'")
            continue
        name, brace, rest = item.partition("{")
        name = name.strip()
        if brace and not rest.rstrip().endswith("}"):
            raise CimcError(f"pass '{name}': options must end with '}}', got '{item}'")
        cls = pass_class(name)
        options = rest.rstrip()[:-1] if brace else ""
        result.append(cls(**_parse_options(name, cls, options)))
    if target is not None:
        set_target(result, target)
    return result


def _parse_options(pass_name: str, cls: type[Pass], text: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    options: dict[str, Any] = {}
    for item in _split_top(text):
        if not item.strip():
            continue
        key, equals, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if key == "target" and issubclass(cls, BackendPass):
            raise CimcError(f"pass '{pass_name}' takes its target from the pipeline, not "
                            "from an option: give --target NAME|FILE (cimc opt) and drop "
                            "target= from -p")
        if key not in fields:
            valid = ", ".join(n.replace("_", "-") for n in fields) or "none"
            raise CimcError(f"pass '{pass_name}' has no option '{key.replace('_', '-')}'; "
                            f"valid options: {valid}")
        if not equals:
            raise CimcError(f"pass '{pass_name}': option '{key}' needs a value (name=value)")
        options[key] = _convert(value.strip(), hints[key], f"pass '{pass_name}' option '{key}'")
    return options


def _convert(text: str, hint: Any, what: str) -> Any:
    """Convert option text to the field's type (int, float, bool, str, lists, X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "") and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if not (text.startswith("[") and text.endswith("]")):
            raise CimcError(f"{what} expects a list like [1,2], got '{text}'")
        items = [t.strip() for t in text[1:-1].split(",") if t.strip()]
        values = [_convert(t, args[0] if args else str, what) for t in items]
        return values if origin is list else tuple(values)
    try:
        if hint is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if hint in (int, float):
            return hint(text)
    except ValueError:
        raise CimcError(f"{what} expects {hint.__name__}, got '{text}'") from None
    if hint is str:
        return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text
    raise CimcError(f"{what} has a type ({hint}) that cannot be set from the command line")


# ---- running -------------------------------------------------------------

# Called between passes: (the pass just run, the module after it).
Callback = Callable[[Pass, Module], None]


@dataclass
class PassTiming:
    """Wall time of one pass application (not counting verification)."""

    name: str
    seconds: float


@dataclass
class _Timer:
    timings: list[PassTiming] = field(default_factory=list)
    started: float = 0.0
    verify_seconds: float = 0.0

    def before(self, pass_: Pass, module: Module) -> None:
        self.started = time.perf_counter()

    def after(self, pass_: Pass, module: Module) -> None:
        self.timings.append(PassTiming(pass_.name, time.perf_counter() - self.started))


def _verify_after(timer: _Timer) -> Callback:
    def check(pass_: Pass, module: Module) -> None:
        started = time.perf_counter()
        try:
            verify(module)
        except CimcError as exc:
            raise CimcError(f"invalid IR after pass '{pass_.name}': {exc.message}") from None
        timer.verify_seconds += time.perf_counter() - started

    return check


def _print_after(names: Collection[str] | None, elide: bool, out: TextIO) -> Callback:
    def dump(pass_: Pass, module: Module) -> None:
        if names is None or pass_.name in names:
            end_progress()
            out.write(f"// -----// IR Dump After {pass_.name} //----- //\n")
            out.write(print_module(module, elide_constants=elide))
            out.flush()

    return dump


def run_pipeline(
    module: Module,
    passes: list[Pass],
    *,
    print_after_all: bool = False,
    print_after: Collection[str] = (),
    time_passes: bool = False,
    elide_constants: bool = False,
    verify_each: bool = True,
    out: TextIO | None = None,
    callbacks: Sequence[Callback] = (),
    verify_seconds: list[float] | None = None,
) -> list[PassTiming]:
    """Apply `passes` to `module` in order, verifying after each; return per-pass times.

    The IR is printed to `out` (stderr by default) after every pass with
    `print_after_all`, or after the passes named in `print_after`; with
    `time_passes` a timing table follows at the end. `callbacks` run after
    each pass once it has been verified. The input is verified first, so a
    broken input is not blamed on the first pass. `verify_each=False` skips
    all verification (for debugging a pass that breaks the IR). The time spent
    verifying is appended to `verify_seconds` when given.
    """
    out = sys.stderr if out is None else out
    names = [p.name for p in passes]
    for name in sorted(set(print_after) - set(names)):
        raise CimcError(f"--print-ir-after {name}: no such pass in the pipeline "
                        f"({', '.join(names) or 'empty'})")
    timer = _Timer()
    after: list[Callback] = [timer.after]
    if verify_each:
        try:
            verify(module)
        except CimcError as exc:
            raise CimcError(f"invalid IR before the first pass: {exc.message}") from None
        after.append(_verify_after(timer))
    if print_after_all or print_after:
        after.append(_print_after(None if print_after_all else set(print_after),
                                  elide_constants, out))
    after.extend(callbacks)
    for index, pass_ in enumerate(passes):
        check_requirements(module, passes, index)
        progress(pass_.name)
        module.forget_analyses()  # derived from the IR the pass may now change
        timer.before(pass_, module)
        pass_.apply(module)
        for callback in after:
            callback(pass_, module)
    if time_passes:
        end_progress()
        out.write(timing_report(timer.timings, timer.verify_seconds))
        out.flush()
    if verify_seconds is not None:
        verify_seconds.append(timer.verify_seconds)
    return timer.timings


def check_requirements(module: Module, passes: Sequence[Pass], index: int) -> None:
    """CimcError when `passes[index]`, about to run on `module`, needs the results of a
    pass (directly or through another) that neither the earlier passes of the pipeline
    nor whatever made `module` have left there, or that are stale: a pass the compiler's
    pipeline runs before them ran after them (`replicate` after `place`)."""
    pass_ = passes[index]
    last = {p.name: k for k, p in enumerate(passes[:index])}  # where each pass last ran
    required = _required(type(pass_))
    absent, reason = [], ""
    # Results build on those of the passes before: once one of them is absent, or run
    # anew by this pipeline, what the module held of the later ones is gone (a module
    # that is not lowered yet has no matvec to lack blocks), and results made before a
    # pass that comes earlier in the compiler's pipeline ran again are stale.
    newest, newest_name = -1, ""  # the latest run of a pass of the chain so far
    stale, rerun = False, ""  # rerun: the pass that ran after a required one
    for name in _chain(type(pass_)):
        ran_at = last.get(name, -1)
        if name not in required:  # optional (replicate before place): ran, it counts
            if ran_at > newest:
                newest, newest_name = ran_at, name
            continue
        if not stale and ran_at > newest:
            newest, newest_name = ran_at, name
            continue
        if not stale and ran_at >= 0:  # ran, but before a pass it builds on ran again
            absent.append(name)
            rerun = rerun or newest_name
            stale = True
            continue
        # A stale result is absent whatever the module shows; what it shows still
        # makes the best reason when no earlier pass gave one.
        stale = stale or newest >= 0
        why = pass_class(name).missing_result(module) if not stale or not reason else ""
        if stale or why is not None:
            absent.append(name)
            reason = reason or why or ""
            stale = True
    if absent:
        order = _canonical_order()
        names = list(dict.fromkeys([p.name for p in passes] + absent))
        names.sort(key=lambda n: order.index(n) if n in order else len(order))
        quoted = [f"'{name}'" for name in absent]
        needed = " and ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1
                              else quoted)
        them = "them" if len(absent) > 1 else "it"
        if rerun:
            raise CimcError(f"pass '{pass_.name}' needs the results of {needed}, which are "
                            f"stale when it runs ('{rerun}' runs after {quoted[0]}, which "
                            f"builds on its results); run {them} after '{rerun}', e.g. "
                            f"-p {','.join(names)}")
        raise CimcError(f"pass '{pass_.name}' needs the results of {needed}, which the "
                        f"pipeline does not run before it{f' ({reason})' if reason else ''}"
                        f"; run {them} first, e.g. -p {','.join(names)}")


def _required(cls: type[Pass]) -> list[str]:
    """The passes `cls` requires, directly or through them, earliest first."""
    found: list[str] = []
    for name in cls.requires:
        for earlier in [*_required(pass_class(name)), name]:
            if earlier not in found:
                found.append(earlier)
    order = _canonical_order()
    return sorted(found, key=lambda n: order.index(n) if n in order else len(order))


def _chain(cls: type[Pass]) -> list[str]:
    """The passes `cls` requires and those the compiler's pipeline runs between the first
    of them and `cls` (optional: `place` reads `replicate`'s copies when it has run),
    earliest first."""
    required, order = _required(cls), _canonical_order()
    if not required or cls.name not in order or required[0] not in order:
        return required
    between = order[order.index(required[0]):order.index(cls.name)]
    return [*between, *(name for name in required if name not in between)]


def _canonical_order() -> list[str]:
    return [*FRONTEND, *BACKEND]


def backend_passes(options: BackendOptions, target: Target) -> list[Pass]:
    """The BACKEND pipeline for `target` configured by `options`."""
    passes = parse_pipeline(",".join(BACKEND))
    settings: dict[str, dict[str, Any]] = {
        "schedule": {"pipeline": options.pipeline, "stream": options.stream,
                     "batch": options.batch},
        "place": {"placer": options.placer},
        "replicate": {},
        "partition": {"method": options.partition, "batch": options.batch},
    }
    if options.replicate is not None:
        settings["replicate"]["budget"] = options.replicate
        settings["partition"]["budget"] = options.replicate
    if options.place_time_limit is not None:
        settings["place"]["time_limit"] = options.place_time_limit
    if options.place_effort is not None:
        settings["place"]["effort"] = options.place_effort
    set_target(passes, target)
    for pass_ in passes:
        for option, value in settings.get(pass_.name, {}).items():
            setattr(pass_, option, value)
    return passes


def set_target(passes: list[Pass], target: Target) -> None:
    """Give every backend pass of a pipeline the pipeline's `target`."""
    for pass_ in passes:
        if isinstance(pass_, BackendPass):
            pass_.target = target


def timing_report(timings: list[PassTiming], verify_seconds: float = 0.0) -> str:
    """A table of pass times (like mlir-opt's --mlir-timing)."""
    rows = [(t.seconds, t.name) for t in timings] + [(verify_seconds, "(verify)")]
    total = sum(seconds for seconds, _ in rows)
    lines = ["===" + "-" * 66 + "===", "  Pass execution timing report",
             "===" + "-" * 66 + "===", f"  Total execution time: {total:.4f} seconds", "",
             "  ---Wall time---   ---Name---"]
    for seconds, name in rows + [(total, "Total")]:
        share = 100.0 * seconds / total if total else 0.0
        lines.append(f"  {seconds:8.4f} ({share:5.1f}%)  {name}")
    return "\n".join(lines) + "\n"
