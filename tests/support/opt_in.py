"""Suites that run only when asked for by their marker (`pytest -m <marker>`)."""

from __future__ import annotations

import pytest


def skip_unless_selected(config, items, marker: str, how: str) -> None:
    """Skip the tests marked `marker` unless `-m` names it; `how` tells how to run them."""
    if marker in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason=how)
    for item in items:
        if marker in item.keywords:
            item.add_marker(skip)
