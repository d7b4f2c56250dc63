"""Run every benchmark module in bench/ that exists and has a `main()`.

`python -m bench` (what `make bench` runs) or `python -m bench NAME ...` for some.
"""

from __future__ import annotations

import importlib
import sys
import time

# In the order they print; a module not written yet is skipped with a note.
BENCHMARKS = ["frontend", "simulator", "compile", "timing", "compile224", "backend", "capacity",
              "placement", "placers", "schedule", "partition", "sweep"]


def main(names: list[str]) -> int:
    for name in names or BENCHMARKS:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            print(f"== {name}: not available yet\n")
            continue
        print(f"== {name}")
        start = time.perf_counter()
        module.main()
        print(f"   ({time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
