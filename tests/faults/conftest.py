"""The fault suite runs only when asked for (`pytest -m faults`): it stops and starts its own broker and
database for minutes, too long for the default run."""

from tests.support.opt_in import skip_unless_selected


def pytest_collection_modifyitems(config, items):
    skip_unless_selected(config, items, "faults", "fault suite: run with `pytest -m faults tests/faults`")
