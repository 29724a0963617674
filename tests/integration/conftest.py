"""Fixtures for integration tests on a real Juju 3.6 controller with Kubernetes (MicroK8s).

Run them with `pytest tests/integration` after `charmcraft pack` (or with CHARM_PATH set).
Without a `juju` binary and a reachable controller every test here is skipped, so the
directory still collects (and exits 0) on machines that cannot run Juju.
"""

import functools
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import jubilant
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--keep-models",
        action="store_true",
        default=False,
        help="keep the temporary Juju models after the tests, to inspect them",
    )


@functools.cache
def no_juju_reason() -> str | None:
    """Why integration tests cannot run here, or None when a controller is usable."""
    juju = shutil.which("juju")
    if juju is None:
        return "no `juju` binary on PATH"
    try:
        proc = subprocess.run(
            [juju, "controllers", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "`juju controllers` timed out"
    if proc.returncode != 0:
        return f"`juju controllers` failed: {proc.stderr.strip()}"
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        return "`juju controllers` printed no JSON"
    if not info.get("controllers"):
        return "no Juju controller (bootstrap one on MicroK8s)"
    if not info.get("current-controller"):
        return "no current Juju controller (`juju switch <controller>`)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Skip rather than ignore: an all-ignored run exits 5 ("no tests"), which fails CI.
    ours = [item for item in items if HERE in item.path.parents]
    if ours and (reason := no_juju_reason()):
        skip = pytest.mark.skip(reason=f"integration tests need Juju + Kubernetes: {reason}")
        for item in ours:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def juju(request: pytest.FixtureRequest) -> Iterator[jubilant.Juju]:
    """A Juju client on a temporary model, one per test module."""
    keep = bool(request.config.getoption("--keep-models"))
    with jubilant.temp_model(keep=keep) as juju:
        juju.wait_timeout = 15 * 60  # first deploys pull the KurrentDB image
        yield juju
        if request.session.testsfailed:  # what the charm logged, for the CI log
            print(juju.debug_log(limit=1000), end="")


@pytest.fixture(scope="session")
def charm_path() -> Path:
    """The packed charm: $CHARM_PATH, else the newest ./kurrentdb_*.charm."""
    if env := os.environ.get("CHARM_PATH"):
        path = Path(env).resolve()
        if not path.is_file():
            pytest.fail(f"CHARM_PATH={env} is not a file")
        return path
    charms = sorted(ROOT.glob("kurrentdb_*.charm"), key=lambda p: p.stat().st_mtime)
    if not charms:
        pytest.skip("no packed charm: run `charmcraft pack` or set CHARM_PATH")
    return charms[-1]


@pytest.fixture(scope="session")
def kurrentdb_image() -> str:
    """The OCI image to deploy with, as pinned in metadata.yaml."""
    metadata = yaml.safe_load((ROOT / "metadata.yaml").read_text())
    return str(metadata["resources"]["kurrentdb-image"]["upstream-source"])
