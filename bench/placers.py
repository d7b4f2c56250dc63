"""Placers against each other on what the chip does: per bench model and target, every
placer's hop_bytes, its ratio to `sequential`'s and to the lower bound, and the
simulated cycles and throughput of one inference (issue 11, done-when 3).

    python -m bench placers    (CIMC_PLACERS_MODELS=a,b picks models,
                                CIMC_PLACERS_TARGETS=pimcomp,isaac the targets)

Models: the test models and the 32x32 ones of `bench compile` (large set) and the
224x224 ones of `bench compile224`; targets pimcomp and isaac. Per model x target one
line per placer, then a verdict line for the default placer (`cpsat`):
`hop/seq` (hop_bytes / sequential's; the goal: <= 0.5 where the bound allows it),
`hop/bound` (hop_bytes / the placement's lower bound, cimc/placement/bound.py;
`seq/bound` says how far the fill already is from it), and `cyc/best` and
`thru/best` (cpsat's simulated cycles and throughput against the best baseline's:
<= 1 and >= 1 are the goal).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PLACERS = ("sequential", "snake", "anneal", "cpsat")  # sequential first: the reference
TARGETS = tuple(os.environ.get("CIMC_PLACERS_TARGETS", "pimcomp,isaac").split(","))
RATIO_GOAL = 0.5
COLUMNS = ("model", "target", "placer", "place_s", "hop_bytes", "hop/seq", "hop/bound",
           "sim_cycles", "sim_thru")


def _models() -> list[tuple[str, Path]]:
    tests = Path(__file__).resolve().parent.parent / "tests"
    sys.path.insert(0, str(tests))
    import backend_models
    import models

    found = [(name, models.quantized_model(name)) for name in ("mnist_cnn", "mlp", "lenet5",
                                                                "residual", "separable")]
    found += [(name, backend_models.quantized_model(name))
              for name in ("mnist_tiny", "mlp_tiny", "resnet18", "mobilenetv2", "vgg11",
                           "resnet18_224", "resnet50_224", "mobilenetv2_224")]
    chosen = os.environ.get("CIMC_PLACERS_MODELS")
    if chosen:
        names = chosen.split(",")
        found = [(n, p) for n, p in found if n in names]
    return found


def main() -> None:
    import cimc
    from cimc.diagnostics import CimcError

    print("  " + " ".join(f"{c:>15}" for c in COLUMNS))
    verdicts = []
    for name, path in _models():
        module = cimc.prepare(path)
        for target in TARGETS:
            figures: dict[str, dict[str, float]] = {}
            for placer in PLACERS:
                try:
                    program = cimc.compile(module, target, placer=placer)
                except CimcError as exc:
                    print(f"  {name:>15} {target:>15}  does not fit: {exc.message}")
                    break
                placed, simulated = program.placement, program.simulated_report
                hop, bound = placed["hop_bytes"], placed["hop_bytes_bound"]
                figures[placer] = {"hop": hop, "bound": bound, "cycles": simulated["cycles"],
                                   "thru": simulated["throughput"],
                                   "seconds": placed["place_seconds"]}
                sequential = figures["sequential"]["hop"]
                values = (name, target, placer, f"{placed['place_seconds']:.2f}", hop,
                          _ratio(hop, sequential), _ratio(hop, bound), simulated["cycles"],
                          f"{simulated['throughput']:.1f}")
                print("  " + " ".join(f"{v!s:>15}" for v in values), flush=True)
            if len(figures) == len(PLACERS):
                verdicts.append(_verdict(name, target, figures))
                print(verdicts[-1], flush=True)
    print("\n  summary (cpsat):")
    for line in verdicts:
        print(line)


def _ratio(value: float, reference: float) -> str:
    if not reference:
        return "-" if not value else "inf"
    return f"{value / reference:.3f}"


def _verdict(name: str, target: str, figures: dict[str, dict[str, float]]) -> str:
    """cpsat against the baselines: hop_bytes vs sequential and the bound, latency and
    throughput vs the best baseline, and whether done-when 3 holds."""
    cp, seq = figures["cpsat"], figures["sequential"]
    baselines = [figures[p] for p in PLACERS if p != "cpsat"]
    cycles = min(b["cycles"] for b in baselines)
    thru = max(b["thru"] for b in baselines)
    hop_ok = cp["hop"] <= RATIO_GOAL * seq["hop"]
    # Where even the bound is above half the fill, the goal cannot be met: say so.
    reachable = cp["bound"] <= RATIO_GOAL * seq["hop"]
    speed_ok = cp["cycles"] <= cycles and cp["thru"] >= thru
    verdict = ("yes" if hop_ok and speed_ok else
               "bound" if speed_ok and not reachable else "NO")
    return (f"  {name:>15} {target:>15}  hop/seq {_ratio(cp['hop'], seq['hop'])}"
            f"  hop/bound {_ratio(cp['hop'], cp['bound'])}"
            f"  seq/bound {_ratio(seq['hop'], seq['bound'])}"
            f"  cyc/best {_ratio(cp['cycles'], cycles)}"
            f"  thru/best {_ratio(cp['thru'], thru)}"
            f"  place_s {cp['seconds']:.2f}  met: {verdict}")


if __name__ == "__main__":
    main()
