"""The long crash suite runs only when asked for (`scripts/test -m long tests/chaos`): 100,000 events with
ten kills and two PostgreSQL crashes take too long for the default run."""

import pytest


def pytest_collection_modifyitems(config, items):
    if "long" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="long crash suite: run with `scripts/test -m long tests/chaos`")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)
