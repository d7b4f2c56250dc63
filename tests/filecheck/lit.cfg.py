"""lit configuration for the FileCheck tests of cimc passes and the textual IR.

Run from the repository root: `.venv/bin/lit -q tests/filecheck`.
`cimc` and `filecheck` in RUN lines resolve to the executables of the Python
environment running lit (the project's .venv).
"""

import os
import sys

import lit.formats

config.name = "cimc"  # noqa: F821 (lit provides `config`)
config.test_format = lit.formats.ShTest(execute_external=False)  # noqa: F821
config.suffixes = [".cir"]  # noqa: F821
config.excludes = ["lit.cfg.py"]  # noqa: F821
config.test_source_root = os.path.dirname(os.path.abspath(__file__))  # noqa: F821
repo = os.path.dirname(os.path.dirname(config.test_source_root))  # noqa: F821
# Temporary files (%t) go to build/, not next to the tests.
config.test_exec_root = os.path.join(repo, "build", "lit")  # noqa: F821

bin_dir = os.path.dirname(sys.executable)
for tool in ("cimc", "filecheck"):
    # Whole words only, so paths and option names containing the word are left alone.
    pattern = rf"(?<![\w/.-]){tool}(?![\w/.-])"
    config.substitutions.append((pattern, os.path.join(bin_dir, tool)))  # noqa: F821
config.environment["PYTHONDONTWRITEBYTECODE"] = "1"  # noqa: F821
# `cimc` runs the code of the checkout these tests belong to (a git worktree too),
# not whichever copy the environment has installed.
config.environment["PYTHONPATH"] = os.pathsep.join(  # noqa: F821
    [repo, *filter(None, [os.environ.get("PYTHONPATH")])])
