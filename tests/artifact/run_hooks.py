"""Run hooks under Scenario from an unpacked .charm; print what happened as JSON.

test_artifact.py copies this file out of the checkout and runs it with the unpacked charm's
own `venv/bin/python` (made the way the charm's `dispatch` makes it: a symlink to a
python3), with PYTHONPATH=<charm>/lib:<charm>/src as `dispatch` sets it, plus one directory
holding only a link to Scenario (`ops.testing` needs it; the charm does not ship it).
Everything else must come from the unpacked charm: the test checks where every loaded
module came from.

Usage: python run_hooks.py CHARM_DIR WORK_DIR
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
import traceback

EXTRA_OPTIONS = "{MaxAppendSize: 1048576}"


def main() -> None:
    charm_dir = pathlib.Path(sys.argv[1])
    work = pathlib.Path(sys.argv[2])
    facts: dict = {"sys_path": list(sys.path), "executable": sys.executable}
    t0 = time.monotonic()
    try:
        run(charm_dir, work, facts)
    except BaseException as e:
        facts["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
    facts["seconds"] = round(time.monotonic() - t0, 2)
    # Imported for the origin check even if the hooks never needed them.
    for name in ("ops", "jinja2", "yaml", "lightkube", "cryptography", "cosl", "prometheus_client"):
        try:
            __import__(name)
        except ImportError as e:
            facts.setdefault("import_errors", {})[name] = str(e)
    facts["modules"] = {
        name: getattr(module, "__file__", None) for name, module in list(sys.modules.items())
    }
    facts["stdlib"] = os.path.dirname(os.path.realpath(os.__file__))
    print(json.dumps(facts))


def run(charm_dir: pathlib.Path, work: pathlib.Path, facts: dict) -> None:
    import yaml
    from ops import testing

    import charm
    from charm import KurrentDBCharm

    meta = yaml.safe_load((charm_dir / "metadata.yaml").read_text())
    (container_name, container_meta), *_ = meta["containers"].items()
    (peer_name,) = meta["peers"]
    (storage_name,) = meta["storage"]
    data_location = container_meta["mounts"][0]["location"]

    # The unit tests do the same (tests/unit/conftest.py): after a (re)start a hook polls
    # KurrentDB for up to SETTLE_TIMEOUT; here nothing answers, so one look is enough.
    import node

    if hasattr(node, "SETTLE_TIMEOUT"):
        node.SETTLE_TIMEOUT = 0.0

    etc, data = work / "etc", work / "data"
    etc.mkdir()
    data.mkdir()
    # The image's user database: a `kurrent` user (and group) owning the data volume already.
    uid, gid = os.getuid(), os.getgid()
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\nkurrent:x:{uid}:{gid}::/home/kurrent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nkurrent:x:{gid}:\n")
    container = testing.Container(
        container_name,
        can_connect=True,
        mounts={
            "etc": testing.Mount(location="/etc", source=etc),
            "data": testing.Mount(location=data_location, source=data),
        },
        execs={testing.Exec(["chown"], return_code=0)},
    )
    state = testing.State(
        leader=True,
        # Validated against the KurrentDB option lists shipped under src/: exercises them.
        config={"extra-options": EXTRA_OPTIONS},
        containers={container},
        relations={testing.PeerRelation(peer_name)},
        storages={testing.Storage(storage_name)},
        model=testing.Model(name="artifact"),
    )
    ctx = testing.Context(KurrentDBCharm, charm_root=charm_dir)
    facts["charm_file"] = charm.__file__
    hooks = []
    for name, event in (
        ("install", ctx.on.install()),
        ("config-changed", ctx.on.config_changed()),
        ("kurrentdb-pebble-ready", None),
    ):
        if event is None:
            event = ctx.on.pebble_ready(state.get_container(container_name))
        t = time.monotonic()
        state = ctx.run(event, state)
        hooks.append(
            {
                "hook": name,
                "seconds": round(time.monotonic() - t, 2),
                "unit_status": [state.unit_status.name, state.unit_status.message],
                "app_status": [state.app_status.name, state.app_status.message],
            }
        )
    # The tls-certificates library loads only once related: its hook runs from the artifact too.
    import dataclasses

    certificates = testing.Relation("certificates", remote_app_name="self-signed-certificates")
    state = dataclasses.replace(state, relations={*state.relations, certificates})
    t = time.monotonic()
    state = ctx.run(ctx.on.relation_created(certificates), state)
    requests = state.get_relation(certificates.id).local_unit_data.get(
        "certificate_signing_requests", "[]"
    )
    hooks.append(
        {
            "hook": "certificates-relation-created",
            "seconds": round(time.monotonic() - t, 2),
            "unit_status": [state.unit_status.name, state.unit_status.message],
        }
    )
    facts["certificate_requests"] = len(json.loads(requests))
    # So do dpcharmlibs and pydantic (compiled pydantic-core) for a database client.
    client = testing.Relation(
        "database", remote_app_name="data-integrator", remote_app_data={"database": "orders"}
    )
    state = dataclasses.replace(state, relations={*state.relations, client})
    t = time.monotonic()
    state = ctx.run(ctx.on.relation_changed(client), state)
    hooks.append(
        {
            "hook": "database-relation-changed",
            "seconds": round(time.monotonic() - t, 2),
            "unit_status": [state.unit_status.name, state.unit_status.message],
        }
    )
    statuses = state.get_relation(client.id).local_app_data.get("status", "[]")
    facts["database_status_codes"] = [s["code"] for s in json.loads(statuses)]
    facts["hooks"] = hooks
    facts["juju_log"] = [[line.level, line.message] for line in ctx.juju_log]
    out = state.get_container(container_name)
    plan = out.plan.to_dict()
    facts["plan_services"] = plan.get("services", {})
    facts["service_statuses"] = {k: str(v) for k, v in out.service_statuses.items()}
    config_file = etc / "kurrentdb" / "kurrentdb.conf"
    facts["config_file"] = config_file.read_text() if config_file.exists() else None
    facts["files_under_etc"] = sorted(
        str(p.relative_to(etc)) for p in etc.rglob("*") if p.is_file()
    )
    facts["secrets"] = len(state.secrets)
    facts["opened_ports"] = sorted(p.port for p in state.opened_ports)


if __name__ == "__main__":
    main()
