"""The fault suite runs only when asked for (`pytest -m faults`): it stops and starts its own broker and
database for minutes, too long for the default run."""

import pytest


def pytest_collection_modifyitems(config, items):
    if "faults" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="fault suite: run with `pytest -m faults tests/faults`")
    for item in items:
        if "faults" in item.keywords:
            item.add_marker(skip)
