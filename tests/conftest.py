"""Suite-wide: the leak audit around the whole run."""

from __future__ import annotations

import pytest

from tests.support.leaks import snapshot


@pytest.fixture(scope="session", autouse=True)
def leak_audit() -> object:
    before = snapshot()
    yield
    leaked = before.diff(snapshot())
    assert not leaked, f"the test suite left host resources behind: {leaked}"
