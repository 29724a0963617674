"""The charm's metadata/config/actions.yaml pass charmcraft's own validation and ours.

Scenario does not catch bad option types, wrong-typed defaults or containers naming an
undeclared resource; charmcraft does some of that, but charmcraft cannot be installed into the
project venv, so charmcraft_validate.py runs under $CHARMCRAFT_PYTHON (set by
scripts/run-tests.sh) in a subprocess.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATOR = Path(__file__).with_name("charmcraft_validate.py")
CHARM_FILES = ("charmcraft.yaml", "metadata.yaml", "config.yaml", "actions.yaml")

pytestmark = pytest.mark.skipif(
    not os.environ.get("CHARMCRAFT_PYTHON"),
    reason="CHARMCRAFT_PYTHON is unset: run `bash scripts/run-tests.sh`, which installs charmcraft",
)


BROKEN_CONFIG = """\
options:
  port:
    type: int
    default: "2113"
    description: A number given as a string, which Juju refuses.
  verbose:
    type: boolean
    default: "yes"
    description: charmcraft coerces "yes" to true; Juju does not.
  colour:
    type: colour
    description: Not a Juju option type.
"""

BROKEN_ACTIONS = """\
get-password:
  description: No additionalProperties, and a default outside the enum.
  params:
    username:
      type: string
      description: Who.
      enum: [admin, ops]
      default: root
"""

BROKEN_CONTAINER = """\
  sidecar:
    resource: no-such-image
    mounts:
      - storage: no-such-storage
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Validate the real files and a broken copy in one run: importing charmcraft is slow."""
    broken = tmp_path_factory.mktemp("broken")
    for name in CHARM_FILES:
        shutil.copy(ROOT / name, broken / name)
    (broken / "config.yaml").write_text(BROKEN_CONFIG)
    (broken / "actions.yaml").write_text(BROKEN_ACTIONS)
    metadata = (broken / "metadata.yaml").read_text()
    assert "\ncontainers:\n" in metadata
    metadata = metadata.replace("\ncontainers:\n", "\ncontainers:\n" + BROKEN_CONTAINER)
    (broken / "metadata.yaml").write_text(metadata)

    proc = subprocess.run(
        [os.environ["CHARMCRAFT_PYTHON"], str(VALIDATOR), str(ROOT), str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    return {"real": out[str(ROOT)], "broken": out[str(broken)]}


def test_charm_files_are_valid(results: dict[str, list[str]]) -> None:
    assert results["real"] == []


def broken_report(results: dict[str, list[str]]) -> str:
    return "\n".join(results["broken"])


def test_validator_reports_broken_config(results: dict[str, list[str]]) -> None:
    report = broken_report(results)
    assert "config.yaml: options.colour" in report  # charmcraft's JujuConfig model
    assert "option 'port' default '2113' is not of type int" in report
    assert "option 'verbose' default 'yes' is not of type boolean" in report


def test_validator_reports_broken_actions(results: dict[str, list[str]]) -> None:
    report = broken_report(results)
    assert "action 'get-password': needs additionalProperties: false" in report
    assert "action 'get-password': param 'username' default: 'root'" in report


def test_validator_reports_broken_containers(results: dict[str, list[str]]) -> None:
    report = broken_report(results)
    assert "container 'sidecar' names undeclared resource 'no-such-image'" in report
    assert "container 'sidecar' mounts undeclared storage 'no-such-storage'" in report
    assert "container 'sidecar' mount of 'no-such-storage' has no location" in report
