"""The packed charm works: what it contains, its hooks run from it alone, charmcraft's lint.

The .charm comes from $KURRENTDB_CHARM (scripts/run-tests.sh packs it with
scripts/pack_charm.py in its "pack" step); without it, these tests pack one themselves.
They skip only when charmcraft is not installed, and never when CI=true.

The hooks run in a subprocess with the unpacked charm's own `venv/bin/python`, made the
way the charm's `dispatch` makes it on a node (a symlink to a python3: here the 3.12 the
project venv is built on), with `dispatch`'s PYTHONPATH (<charm>/lib:<charm>/src). Only
Scenario, which the charm does not ship, comes from the project venv, through a directory
holding a link to that one package. So the charm code, ops and every dependency are the
artifact's, and an artifact missing a dependency fails with ImportError; the test also
checks where every loaded module came from.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import stat
import subprocess
import sys
import zipfile
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACK_SCRIPT = ROOT / "scripts" / "pack_charm.py"
HOOK_RUNNER = pathlib.Path(__file__).with_name("run_hooks.py")
CHARMCRAFT_PYTHON = pathlib.Path(
    os.environ.get("CHARMCRAFT_PYTHON") or ROOT / ".tools" / "charmcraft" / "bin" / "python"
)
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
BASE_PYTHON = "3.12"  # ubuntu@24.04, the charm's base
SITE_PACKAGES = f"venv/lib/python{BASE_PYTHON}/site-packages"
# The charm's run-time dependencies (pyproject.toml) and ops' own, as import names.
DEPENDENCIES = (
    "ops",
    "jinja2",
    "yaml",
    "lightkube",
    "cryptography",
    "cosl",
    "prometheus_client",
    "charmlibs.interfaces.tls_certificates",
    "dpcharmlibs.interfaces",
    "pydantic_core",
)
# Everything the charm reads at run time, relative to the charm root.
RUNTIME_FILES = (
    "dispatch",
    "manifest.yaml",
    "metadata.yaml",
    "config.yaml",
    "actions.yaml",
    "src/charm.py",
    "templates/kurrentdb.conf.j2",  # src/workload/render.py, TEMPLATES_DIR
    "src/grafana_dashboards/kurrentdb.json",  # src/cos/dashboards.py
    "src/prometheus_alert_rules/kurrentdb.rules.yaml",  # src/cos/rules.py
    "src/loki_alert_rules/kurrentdb.rules.yaml",  # src/cos/rules.py
)
# The charm's top level: nothing else of the source tree may leak into it. lib/ appears
# once the charm vendors charm libraries.
TOP_LEVEL = {
    "dispatch",
    "manifest.yaml",
    "metadata.yaml",
    "config.yaml",
    "actions.yaml",
    "src",
    "templates",
    "venv",
}
OPTIONAL_TOP_LEVEL = {"lib"}


def charmcraft_installed() -> bool:
    return CHARMCRAFT_PYTHON.is_file() and (CHARMCRAFT_PYTHON.parent / "charmcraft").is_file()


@pytest.fixture(scope="session")
def charm_file(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    given = os.environ.get("KURRENTDB_CHARM")
    if given:
        path = pathlib.Path(given).resolve()
        if not path.is_file():
            pytest.fail(f"KURRENTDB_CHARM={given} does not exist: the pack step failed?")
        return path
    if not charmcraft_installed():
        message = f"charmcraft is not installed at {CHARMCRAFT_PYTHON}: run scripts/run-tests.sh"
        if IN_CI:
            pytest.fail(f"CI=true and no packed charm: {message}")
        pytest.skip(message)
    out = tmp_path_factory.mktemp("charm")
    proc = subprocess.run(
        [str(CHARMCRAFT_PYTHON), str(PACK_SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        pytest.fail(f"pack_charm.py failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    (path,) = out.glob("*.charm")
    return path


@pytest.fixture(scope="session")
def unpacked(charm_file: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(charm_file) as archive:
        for info in archive.infolist():
            archive.extract(info, root)
            mode = info.external_attr >> 16
            if mode and not stat.S_ISLNK(mode):
                (root / info.filename).chmod(stat.S_IMODE(mode))
    return root


@pytest.fixture(scope="session")
def charm_python(unpacked: pathlib.Path) -> pathlib.Path:
    """`venv/bin/python`, created as `dispatch` creates it: a link to the host's python3."""
    base = pathlib.Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    cfg = (unpacked / "venv" / "pyvenv.cfg").read_text()
    settings = dict(line.split("=", 1) for line in cfg.splitlines() if "=" in line)
    settings = {key.strip(): value.strip() for key, value in settings.items()}
    version = settings.get("version_info") or settings.get("version", "unknown")
    if not version.startswith(BASE_PYTHON + "."):
        pytest.fail(f"the charm's venv was built with Python {version}, not {BASE_PYTHON}")
    if f"{sys.version_info.major}.{sys.version_info.minor}" != BASE_PYTHON:
        pytest.fail(f"run the artifact tests with Python {BASE_PYTHON} (the charm's), not {base}")
    python = unpacked / "venv" / "bin" / "python"
    python.parent.mkdir(exist_ok=True)
    if not python.exists():
        python.symlink_to(base)
    return python


def test_contents(charm_file: pathlib.Path, unpacked: pathlib.Path, record_property: Any) -> None:
    with zipfile.ZipFile(charm_file) as archive:
        names = [info.filename for info in archive.infolist() if not info.is_dir()]
        unzipped = sum(info.file_size for info in archive.infolist())
    size = charm_file.stat().st_size
    record_property("artifact", str(charm_file))
    record_property("size", f"{size} bytes ({size / 1e6:.1f} MB; {unzipped / 1e6:.1f} MB unpacked)")
    record_property("files", len(names))

    missing = [name for name in RUNTIME_FILES if not (unpacked / name).is_file()]
    assert not missing, f"run-time files missing from the charm: {missing}"
    # KurrentDB's option names (src/config.py): one list, or one per release line.
    option_lists = [
        *unpacked.glob("src/kurrentdb_option_names.txt"),
        *unpacked.glob("src/kurrentdb_options/*.txt"),
    ]
    assert option_lists, "no KurrentDB option-name list in the charm's src/"
    top = {path.name for path in unpacked.iterdir()}
    assert TOP_LEVEL <= top <= TOP_LEVEL | OPTIONAL_TOP_LEVEL, f"unexpected top level: {top}"
    assert os.access(unpacked / "dispatch", os.X_OK)
    assert 'src/charm.py"' in (unpacked / "dispatch").read_text()

    site = unpacked / SITE_PACKAGES
    absent = [name for name in DEPENDENCIES if not (site / name.replace(".", "/")).is_dir()]
    assert not absent, f"dependencies missing from {SITE_PACKAGES}: {absent}"
    # Nothing of the project's dev tools or of the test suite.
    for name in ("pytest", "scenario", "coverage", "mypy", "ruff", "jubilant", "hypothesis"):
        assert not (site / name).exists(), f"{name} is a dev dependency, yet in the charm"
    assert not list(unpacked.glob("tests")), "tests/ leaked into the charm"
    # Every file under the project's src/ (modules and data files) reached the charm.
    not_packed = [
        str(rel)
        for rel in (path.relative_to(ROOT) for path in (ROOT / "src").rglob("*"))
        if "__pycache__" not in rel.parts
        and (ROOT / rel).is_file()
        and not (unpacked / rel).is_file()
    ]
    assert not not_packed, f"in the project's src/ but not in the charm: {not_packed}"
    for name in ("metadata.yaml", "config.yaml", "actions.yaml"):
        assert yaml.safe_load((unpacked / name).read_text()) == yaml.safe_load(
            (ROOT / name).read_text()
        ), f"the charm's {name} differs from the project's"


def module_origins(facts: dict[str, Any], unpacked: pathlib.Path) -> dict[str, list[str]]:
    """Loaded modules by where their file really is."""
    stdlib = pathlib.Path(facts["stdlib"])
    charm = unpacked.resolve()
    found: dict[str, list[str]] = {"charm": [], "stdlib": [], "scenario": [], "other": []}
    for name, file in facts["modules"].items():
        if file is None or name == "__main__":  # built-ins, namespace packages, the runner
            continue
        real = pathlib.Path(file).resolve()
        if real.is_relative_to(charm):
            found["charm"].append(name)
        elif real.is_relative_to(stdlib) and "site-packages" not in real.parts:
            found["stdlib"].append(name)
        elif name.split(".")[0] == "scenario":
            found["scenario"].append(name)
        else:
            found["other"].append(f"{name}: {real}")
    return found


def test_hooks_run_from_the_artifact(
    unpacked: pathlib.Path,
    charm_python: pathlib.Path,
    tmp_path: pathlib.Path,
    record_property: Any,
) -> None:
    import scenario

    test_only = tmp_path / "test-only"
    test_only.mkdir()
    (test_only / "scenario").symlink_to(pathlib.Path(scenario.__file__).parent)
    work = tmp_path / "work"
    work.mkdir()
    runner = work / HOOK_RUNNER.name  # not run from the checkout
    shutil.copy(HOOK_RUNNER, runner)
    env = {name: os.environ[name] for name in ("PATH", "TMPDIR", "LANG") if name in os.environ}
    env |= {
        # As the charm's dispatch sets it, then Scenario alone.
        "PYTHONPATH": os.pathsep.join(
            [str(unpacked / "lib"), str(unpacked / "src"), str(test_only)]
        ),
        "PYTHONSAFEPATH": "1",  # not the runner's directory
        "PYTHONNOUSERSITE": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": str(work),
        "KUBECONFIG": str(work / "no-kubeconfig"),  # lightkube finds no cluster, quickly
    }
    proc = subprocess.run(
        [str(charm_python), "-W", "error", str(runner), str(unpacked), str(work)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"hook runner failed:\n{proc.stdout}\n{proc.stderr}"
    facts = json.loads(proc.stdout.splitlines()[-1])
    assert "error" not in facts, f"a hook raised:\n{facts['error']}\n{proc.stderr}"
    assert not facts.get("import_errors"), facts.get("import_errors")
    # Related to a certificates provider, the packed tls-certificates library sent a CSR.
    assert facts["certificate_requests"] == 1, facts
    # Related to a database client, the packed dpcharmlibs told it why it waits (no KurrentDB).
    assert facts["database_status_codes"] == [4001], facts

    # Nothing from the checkout: the charm, ops and its dependencies are the artifact's.
    charm = unpacked.resolve()
    assert pathlib.Path(facts["executable"]) == charm_python
    for name in ("charm", *DEPENDENCIES):
        file = facts["modules"].get(name)
        assert file and pathlib.Path(file).resolve().is_relative_to(charm), f"{name}: {file}"
    assert facts["sys_path"][:2] == [str(unpacked / "lib"), str(unpacked / "src")]
    origins = module_origins(facts, unpacked)
    assert not origins["other"], "modules loaded from outside the charm:\n" + "\n".join(
        origins["other"]
    )
    checkout_src = (ROOT / "src").resolve()
    assert not any(
        pathlib.Path(f).resolve().is_relative_to(checkout_src)
        for f in facts["modules"].values()
        if f
    )
    record_property(
        "modules loaded",
        f"{len(origins['charm'])} from the charm, {len(origins['stdlib'])} stdlib, "
        f"{len(origins['scenario'])} Scenario (test-only)",
    )

    # The hooks: KurrentDB is not there (nothing listens on localhost:2113), which must
    # only make the unit wait, never error.
    hooks = {hook["hook"]: hook for hook in facts["hooks"]}
    record_property(
        "hooks", ", ".join(f"{name} {hook['seconds']} s" for name, hook in hooks.items())
    )
    last = hooks["kurrentdb-pebble-ready"]
    assert last["unit_status"][0] == "waiting", last
    assert "not answering" in last["unit_status"][1], last
    related = hooks["certificates-relation-created"]
    assert related["unit_status"][0] == "waiting", related  # no KurrentDB, no certificate yet
    errors = [line for line in facts["juju_log"] if line[0] in ("ERROR", "CRITICAL")]
    assert not errors, errors
    assert facts["secrets"] >= 2  # the leader created the CA and the system passwords

    config = facts["config_file"]
    assert config is not None, f"no kurrentdb.conf; /etc holds {facts['files_under_etc']}"
    options = yaml.safe_load(config)
    assert options["ClusterSize"] == 1
    assert options["CertificateFile"] == "/etc/kurrentdb/certs/node.crt"
    assert options["CertificatePrivateKeyFile"] == "/etc/kurrentdb/certs/node.key"
    assert options["TrustedRootCertificatesPath"] == "/etc/kurrentdb/certs/ca"
    assert options["Insecure"] is False
    assert options["Db"] == "/var/lib/kurrentdb"
    assert options["NodeHostAdvertiseAs"].startswith("kurrentdb-0.kurrentdb-endpoints.")
    assert options["MaxAppendSize"] == 1048576  # extra-options, checked against the option lists
    for cert in (
        "kurrentdb/certs/node.crt",
        "kurrentdb/certs/node.key",
        "kurrentdb/certs/ca/ca.crt",
    ):
        assert cert in facts["files_under_etc"]

    service = facts["plan_services"].get("kurrentdb")
    assert service, f"no kurrentdb service in the Pebble plan: {facts['plan_services']}"
    assert service["command"] == "/opt/kurrentdb/KurrentDB --config /etc/kurrentdb/kurrentdb.conf"
    assert service["user"] == "kurrent"
    assert facts["service_statuses"].get("kurrentdb") == "ServiceStatus.ACTIVE"
    assert 2113 in facts["opened_ports"]


# `charmcraft analyse` 4.5.0 on any uv-built charm (juju-facts.md §13): it reads its own
# dispatch's `${dispatch_path}` literally, so it cannot find the entrypoint and does not
# recognise the language or framework (the ops-main-call lint then does not apply).
# test_contents and test_hooks_run_from_the_artifact check those things directly.
def known_false_positive(check: dict[str, Any]) -> bool:
    return check["name"] == "entrypoint" and "${dispatch_path}" in check.get("text", "")


def test_charmcraft_analyse(
    charm_file: pathlib.Path, unpacked: pathlib.Path, tmp_path: pathlib.Path, record_property: Any
) -> None:
    if not charmcraft_installed():
        if IN_CI:
            pytest.fail(f"CI=true and charmcraft is not installed at {CHARMCRAFT_PYTHON}")
        pytest.skip(f"charmcraft is not installed at {CHARMCRAFT_PYTHON}")
    home = tmp_path / "home"
    env = {name: os.environ[name] for name in ("PATH", "TMPDIR", "LANG") if name in os.environ}
    env |= {"HOME": str(home)} | {
        var: str(home / sub)
        for var, sub in (
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_DATA_HOME", ".local/share"),
            ("XDG_STATE_HOME", ".local/state"),
            ("XDG_RUNTIME_DIR", "run"),
        )
    }
    for var in (
        "XDG_CONFIG_HOME",
        "XDG_CACHE_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
    ):
        pathlib.Path(env[var]).mkdir(parents=True, mode=0o700)
    proc = subprocess.run(
        [str(CHARMCRAFT_PYTHON.parent / "charmcraft"), "analyse", "--format=json", str(charm_file)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    try:
        checks = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"charmcraft analyse gave no JSON ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        )
    by_name = {check["name"]: check for check in checks}
    lint = [check for check in checks if check["check_type"] == "lint"]
    errors = [c for c in lint if c["result"] in ("error", "fatal") and not known_false_positive(c)]
    assert not errors, json.dumps(errors, indent=2)

    # pip-check runs `pip check` with charmcraft's own interpreter standing in for the
    # venv's python: meaningful only when that interpreter is the venv's version.
    charmcraft_version = subprocess.run(
        [str(CHARMCRAFT_PYTHON), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    pip_check = by_name.get("pip-check", {"result": "absent", "text": ""})
    if charmcraft_version == BASE_PYTHON:
        assert pip_check["result"] == "ok", pip_check
        pip_note = "ok (charmcraft runs on the venv's Python, so this is a real check)"
    else:
        pip_note = (
            f"{pip_check['result']}, not checked: charmcraft runs on Python "
            f"{charmcraft_version}, the charm's venv is {BASE_PYTHON}"
        )
    warnings = [f"{c['name']}: {c['text']}" for c in lint if c["result"] == "warning"]
    ignored = [f"{c['name']} ({c['result']})" for c in checks if known_false_positive(c)]
    attributes = [f"{c['name']}={c['result']}" for c in checks if c["check_type"] == "attribute"]
    record_property("analyse pip-check", pip_note)
    record_property(
        "analyse",
        f"lint errors: none; known false positives ignored: {', '.join(ignored) or 'none'}; "
        f"attributes: {', '.join(attributes)}; warnings: {'; '.join(warnings) or 'none'}",
    )
