"""Sweeps: a model's accuracy on a labelled test set over a grid of settings.

    from cimc.sweep import Grid, LabelledSet, run_sweep
    result = run_sweep(module, LabelledSet(images, labels), Grid(adc_bits=(4, 6, 8)))

The grid crosses target settings (target, cell bits, DAC bits: each compiled once,
as a variant of the target when the bits differ from its own) with simulator
what-ifs (ADC bits, cell-noise sigma: docs/simulator.md). Every point runs the
compiled program on the test set in shards; every target setting also runs once
exactly (ideal ADC, no noise), which `agreement` compares against.

The work is two pure functions, `compile_setting` and `simulate_shard`, run
through a `Runner`: in-process (`Serial`) or as Ray tasks (`RayRunner`, which
`ray_runner` starts); either keeps the progress line up to date. The
noise of a point is drawn from the sweep's seed, once per core, the same for
every shard (one device per point, whatever the sharding), and the results are
gathered in grid order, so every runner and every shard size give the same
numbers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from cimc.diagnostics import CimcError, progress, warn

if TYPE_CHECKING:
    from cimc.api import Program
    from cimc.ir.module import Module
    from cimc.targets import Target

# Test samples simulated by one task (a shard): small enough to spread a few points
# over the workers, large enough that a task's fixed cost (the run's report) is small.
SHARD_SIZE = 250

# The columns of a point, in the order the CSV writes them.
COLUMNS = ("target", "cell_bits", "dac_bits", "adc_bits", "exact_adc_bits", "noise", "seed",
           "samples", "accuracy", "agreement", "cycles", "latency_us", "energy_nj",
           "crossbars")


@dataclass(frozen=True)
class Grid:
    """The settings a sweep crosses; None means the target's own (cell and DAC bits) or
    the ideal ADC (ADC bits)."""

    targets: tuple[str, ...] = ("isaac",)
    cell_bits: tuple[int | None, ...] = (None,)
    dac_bits: tuple[int | None, ...] = (None,)
    adc_bits: tuple[int | None, ...] = (None,)
    noise: tuple[float, ...] = (0.0,)

    def settings(self) -> list[tuple[str, int | None, int | None]]:
        """The target settings, each compiled once, in grid order."""
        return [(t, c, d) for t in self.targets for c in self.cell_bits for d in self.dac_bits]

    def what_ifs(self) -> list[tuple[int | None, float]]:
        """The (ADC bits, noise sigma) points run on every target setting, in grid order."""
        return [(a, s) for a in self.adc_bits for s in self.noise]


@dataclass
class LabelledSet:
    """Float inputs as the model takes them (one array, or a dict by input name; samples
    stacked on axis 0) and one integer label per sample."""

    inputs: np.ndarray | dict[str, np.ndarray]
    labels: np.ndarray

    def shards(self, batch: dict[str, int], size: int) -> list[dict[str, np.ndarray]]:
        """The inputs by name, cut into shards of `size` samples (`batch`: each input's
        rows per sample)."""
        arrays = self.inputs if isinstance(self.inputs, dict) else {
            next(iter(batch)): self.inputs}
        count = len(self.labels)
        for name, array in arrays.items():
            if len(array) < count * batch[name]:
                raise CimcError(f"input '{name}' holds {len(array) // batch[name]} samples "
                                f"but there are {count} labels; give an input per label")
        return [{name: array[start * batch[name]: min(start + size, count) * batch[name]]
                 for name, array in arrays.items()} for start in range(0, count, size)]


@dataclass(frozen=True)
class ShardResult:
    """What simulating one shard at one point gives: the model's first output per sample
    (flattened), the warnings the run printed, and the run's per-inference figures."""

    outputs: np.ndarray
    figures: dict[str, Any]
    warnings: tuple[str, ...] = ()


@dataclass
class SweepResult:
    """One row per point (COLUMNS) and one per target setting's exact run, in grid order."""

    model: str
    samples: int
    seed: int
    points: list[dict[str, Any]] = field(default_factory=list)
    exact: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "samples": self.samples, "seed": self.seed,
                "columns": list(COLUMNS), "exact": self.exact, "points": self.points}

    def csv(self) -> str:
        """The points as CSV: a header of COLUMNS, one line per point ('ideal' for the
        ideal ADC)."""
        lines = [",".join(COLUMNS)]
        for point in self.points:
            lines.append(",".join("ideal" if point[c] is None else str(point[c])
                                  for c in COLUMNS))
        return "\n".join(lines) + "\n"


class Runner(Protocol):
    """Where the work runs: `share` an argument every task reads, `call` a function
    (a handle to its result; handles may be arguments of later calls), `gather` results
    in the order of their handles, naming the work in the progress line."""

    def share(self, value: Any) -> Any: ...

    def call(self, function: Callable[..., Any], *args: Any) -> Any: ...

    def gather(self, handles: Sequence[Any], what: str = "tasks") -> list[Any]: ...


@dataclass
class _Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    done: bool = False
    result: Any = None


class Serial:
    """Runs the calls in this process, each once, when `gather` needs its result."""

    def share(self, value: Any) -> Any:
        return value

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return _Call(function, args)

    def gather(self, handles: Sequence[Any], what: str = "tasks") -> list[Any]:
        results = []
        for k, handle in enumerate(handles):
            results.append(self._value(handle))
            progress(f"sweep: {k + 1} of {len(handles)} {what} done")
        return results

    def _value(self, handle: Any) -> Any:
        if not isinstance(handle, _Call):
            return handle
        if not handle.done:
            handle.result = handle.function(*(self._value(a) for a in handle.args))
            handle.done = True
        return handle.result


def target_variant(name: str, cell_bits: int | None, dac_bits: int | None) -> Target:
    """Target `name` (a bundled name or a file) with other cell or DAC bits, checked as a
    target file with those values would be."""
    from cimc.api import load_target
    from cimc.targets.schema import SCHEMA
    from cimc.targets.validate import check_target

    target = load_target(name)
    cells = target.cell_bits if cell_bits is None else cell_bits
    dac = target.dac_bits if dac_bits is None else dac_bits
    changes = {key: value for key, value in (("cell_bits", cells), ("dac_bits", dac))
               if value != getattr(target, key)}
    if not changes:
        return target
    for key in SCHEMA:  # the ranges a target file allows
        if key.section == "crossbar" and key.name in changes:
            low, high = key.low, key.high
            if (low is not None and changes[key.name] < low) or \
                    (high is not None and changes[key.name] > high):
                raise CimcError(f"{key.name.replace('_', '-')} {changes[key.name]} is out of "
                                f"range: {key.path} takes {low:g}..{high:g}")
    variant = dataclasses.replace(target, cell_bits=cells, dac_bits=dac)
    problems = check_target(variant, "")
    if problems:
        given = ", ".join(f"{key.replace('_', '-')} {value}" for key, value in changes.items())
        raise CimcError(f"target {target.name!r} with {given}: {problems[0].message}")
    return variant


@dataclass(frozen=True)
class Compiled:
    """A target setting's program and the warnings compiling it printed."""

    program: Program
    warnings: tuple[str, ...] = ()


def compile_setting(module: Module, target: Target, options: dict[str, Any]) -> Compiled:
    """`module` (after the frontend) compiled for `target` with `cimc.compile`'s options."""
    from cimc.api import compile as compile_program

    with _captured() as printed:
        program = compile_program(module, target, **options)
    return Compiled(program, _warnings(printed))


def simulate_shard(compiled: Compiled, inputs: dict[str, np.ndarray], adc_bits: int | None,
                   noise: float, seed: int) -> ShardResult:
    """The compiled program run on one shard with the what-ifs (Program.simulate)."""
    program = compiled.program
    with _captured() as printed:
        run = program.simulate(inputs, adc_bits=adc_bits, noise=noise, seed=seed)
    first = run.outputs[program.integer.outputs[0]]
    figures = run.figures
    return ShardResult(
        first.reshape(figures["batch"], -1),
        {"cycles": figures["cycles"], "latency_us": figures["latency_us"],
         "energy_nj": figures["energy_nj"], "crossbars": figures["crossbars_used"]},
        _warnings(printed))


@contextlib.contextmanager
def _captured() -> Any:
    """What a task prints to stderr (cimc warnings), so that the driver prints it once,
    the same way in-process or on a Ray worker."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _warnings(printed: io.StringIO) -> tuple[str, ...]:
    prefix = "cimc: warning: "
    return tuple(line.removeprefix(prefix) for line in printed.getvalue().splitlines()
                 if line.startswith(prefix))


def run_sweep(module: Module, test: LabelledSet, grid: Grid, *,
              options: dict[str, Any] | None = None, seed: int = 0,
              shard_size: int = SHARD_SIZE, runner: Runner | None = None,
              model: str = "") -> SweepResult:
    """Accuracy, agreement with the exact run, cycles, energy and crossbars of `module`
    on `test` at every point of `grid` (`options`: those of `cimc.compile`)."""
    from cimc.targets import exact_adc_bits

    runner = runner or Serial()
    options = dict(options or {})
    labels = np.asarray(test.labels)
    batch = {name: module.values[name].shape[0] if module.values[name].shape else 1
             for name in module.inputs}
    variants = [target_variant(*setting) for setting in grid.settings()]
    for variant in variants:
        needed, largest = exact_adc_bits(variant)
        low = [bits for bits in grid.adc_bits if bits is not None and bits < needed]
        if low:
            # One warning per target setting names every point below the threshold.
            count = len(low) * len(grid.noise)
            warn(f"ADC bits {', '.join(map(str, low))} {'is' if len(low) == 1 else 'are'} "
                 f"below the {needed} bits an exact partial sum needs on {_described(variant)} "
                 f"(up to {largest}): conversions above the ADC's range clip, so "
                 f"{'that point' if count == 1 else f'those {count} points'} may differ from "
                 "the exact model")
    shards = [runner.share(shard) for shard in test.shards(batch, shard_size)]
    shared_module = runner.share(module)
    programs = [runner.call(compile_setting, shared_module, variant, options)
                for variant in variants]
    # Per setting: the exact run, then every what-if point; each over every shard.
    runs = [(None, 0.0), *grid.what_ifs()]
    handles = [runner.call(simulate_shard, program, shard, adc, noise, seed)
               for program in programs for adc, noise in runs for shard in shards]
    compiled: list[Compiled] = runner.gather(programs, "compiles")
    results: list[ShardResult] = runner.gather(handles, "shard runs")
    printed = [message for setting in compiled for message in setting.warnings]
    for result in results:
        printed.extend(result.warnings)
    for message in dict.fromkeys(printed):  # each once, in order
        warn(message)

    sweep = SweepResult(model, len(labels), seed)
    per_run = len(shards)
    for k, variant in enumerate(variants):
        start = k * len(runs) * per_run
        exact = _joined(results[start: start + per_run])
        exact_classes = exact[0].argmax(axis=1)
        setting = {"target": variant.name, "cell_bits": variant.cell_bits,
                   "dac_bits": variant.dac_bits}
        sweep.exact.append({**setting, "samples": len(labels),
                            "accuracy": _fraction(exact_classes == labels), **exact[1]})
        for j, (adc, noise) in enumerate(runs[1:], start=1):
            at = start + j * per_run
            outputs, figures = _joined(results[at: at + per_run])
            classes = outputs.argmax(axis=1)
            sweep.points.append({
                **setting, "adc_bits": adc, "exact_adc_bits": exact_adc_bits(variant)[0],
                "noise": noise, "seed": seed, "samples": len(labels),
                "accuracy": _fraction(classes == labels),
                "agreement": _fraction(classes == exact_classes), **figures})
    return sweep


def _described(target: Target) -> str:
    return (f"target {target.name!r} with {target.cell_bits}-bit cells and a "
            f"{target.dac_bits}-bit DAC")


def _joined(shards: list[ShardResult]) -> tuple[np.ndarray, dict[str, Any]]:
    """The outputs of a run's shards in order, and its figures: those of the first shard
    (per inference; the program has no data-dependent control flow), rounded."""
    figures = shards[0].figures
    return np.concatenate([s.outputs for s in shards]), {
        "cycles": int(figures["cycles"]), "latency_us": round(figures["latency_us"], 3),
        "energy_nj": round(figures["energy_nj"], 3), "crossbars": int(figures["crossbars"])}


def _fraction(hits: np.ndarray) -> float:
    return round(float(np.mean(hits)), 6)


class RayRunner:
    """Runs every call as a Ray task of one CPU; shared arguments go to the object store
    once, and a task's result feeds later tasks without coming back to this process."""

    def __init__(self, ray: Any) -> None:
        self.ray = ray
        self.remotes: dict[Callable[..., Any], Any] = {}

    def share(self, value: Any) -> Any:
        return self.ray.put(value)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        if function not in self.remotes:
            self.remotes[function] = self.ray.remote(num_cpus=1, max_retries=0)(function)
        return self.remotes[function].remote(*args)

    def gather(self, handles: Sequence[Any], what: str = "tasks") -> list[Any]:
        from ray.exceptions import RayTaskError

        try:
            pending, done = list(handles), 0
            while pending:  # for the progress line; the results come in handle order
                ready, pending = self.ray.wait(pending, num_returns=1)
                done += len(ready)
                progress(f"sweep: {done} of {len(handles)} {what} done (Ray)")
            return list(self.ray.get(list(handles)))
        except RayTaskError as exc:
            if isinstance(exc.cause, CimcError):  # the user's error, as in-process
                raise CimcError(str(exc.cause)) from None
            raise


@contextlib.contextmanager
def ray_runner(address: str | None = None, workers: int = 2) -> Iterator[RayRunner]:
    """A RayRunner on the Ray cluster at `address`, or on a local instance of `workers`
    CPUs started here (no dashboard, errors only in the log) and stopped on leaving."""
    import logging
    import os

    try:
        import ray
    except ModuleNotFoundError:
        raise CimcError("Ray is not installed: pip install 'cimc[sweep]', or run the sweep "
                        "in this process with --serial") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage-stats notice
    settings: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        # "local": always an instance of our own, even when RAY_ADDRESS or a cluster
        # started earlier on this machine would otherwise be joined.
        settings.update(num_cpus=workers, include_dashboard=False)
    try:
        ray.init(address=address or "local", **settings)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise CimcError(f"cannot start or reach {where}: {exc}") from None
    try:
        yield RayRunner(ray)
    finally:
        ray.shutdown()
