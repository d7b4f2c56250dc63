"""Shared pytest set-up: two tiers of model-scale tests.

* `slow`: skipped by a plain `pytest` run, run by `make test` (--runslow);
  the representative models (ResNet-18, MobileNetV2, VGG-11, the zoo graphs).
* `heavy`: minutes each (ImageNet-scale pipelines and placements); run only
  by `make test-all` (--runheavy). Their figures live in `make bench`.
"""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")
    parser.addoption("--runheavy", action="store_true", help="also run slow and heavy tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    heavy = config.getoption("--runheavy")
    slow = heavy or config.getoption("--runslow")
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow (make test)")
    skip_heavy = pytest.mark.skip(reason="heavy: run with --runheavy (make test-all)")
    for item in items:
        if "heavy" in item.keywords and not heavy:
            item.add_marker(skip_heavy)
        elif "slow" in item.keywords and not slow:
            item.add_marker(skip_slow)
