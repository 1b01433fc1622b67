"""The long crash suite runs only when asked for (`scripts/test -m long tests/chaos`): 100,000 events with
ten kills and two PostgreSQL crashes take too long for the default run."""

from tests.support.opt_in import skip_unless_selected


def pytest_collection_modifyitems(config, items):
    skip_unless_selected(config, items, "long", "long crash suite: run with `scripts/test -m long tests/chaos`")
