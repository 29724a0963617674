"""Print what the artifact tests measured (size, file count, timings) after the run."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = [
        f"{name}: {value}"
        for outcome in ("passed", "failed", "skipped")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
    ]
    if lines:
        terminalreporter.section("packed charm")
        for line in lines:
            terminalreporter.write_line(line)
