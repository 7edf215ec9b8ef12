"""Suite-wide: the leak audit around the whole run; no test daemon may log a traceback."""

from __future__ import annotations

import os

import pytest

from tests.support.daemon import DaemonProcess
from tests.support.leaks import snapshot
from tests.support.slow import FACTOR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Per-test timeouts (pyproject's default or a test's own mark) scale by the
    time factor, as the tests' waits do: the VM lane runs ten times slower."""
    if FACTOR == 1 or not config.pluginmanager.hasplugin("timeout"):
        return
    # pytest-timeout's own order: --timeout, then PYTEST_TIMEOUT, then pyproject
    default = float(config.getoption("timeout") or os.environ.get("PYTEST_TIMEOUT") or config.getini("timeout") or 0)
    for item in items:
        mark = item.get_closest_marker("timeout")
        seconds = default
        if mark is not None:
            seconds = float(mark.args[0] if mark.args else mark.kwargs.get("timeout", default))
        if seconds > 0:
            item.add_marker(pytest.mark.timeout(seconds * FACTOR), append=False)


@pytest.fixture(scope="session", autouse=True)
def leak_audit() -> object:
    before = snapshot()
    yield
    leaked = before.diff(snapshot())
    assert not leaked, f"the test suite left host resources behind: {leaked}"


def _daemon_problems(before: int) -> None:
    new = DaemonProcess.problems[before:]
    del DaemonProcess.problems[before:]
    assert not new, "a test daemon logged what only a bug in podrt logs:\n" + "\n\n".join(new)


@pytest.fixture(scope="module", autouse=True)
def daemon_logs_module() -> object:
    """Daemons of module fixtures are stopped after the last test: checked here (autouse: torn down last)."""
    before = len(DaemonProcess.problems)
    yield
    _daemon_problems(before)


@pytest.fixture(autouse=True)
def daemon_logs() -> object:
    """No test daemon logged a traceback or an unretrieved task exception
    during a test (those still running are read now: the module's daemons)."""
    before = len(DaemonProcess.problems)
    yield
    for daemon in list(DaemonProcess.live):
        daemon.check_log()
    _daemon_problems(before)
