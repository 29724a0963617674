"""A hook without a backup pays nothing: no boto3, azure or object-storage library."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("boto3", "botocore", "s3transfer", "azure", "object_storage")


def _loaded_after(code: str) -> list[str]:
    probe = code + textwrap.dedent(
        f"""
        import json, sys
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in ("src", "lib"))}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True, cwd=ROOT
    )
    return json.loads(result.stdout.splitlines()[-1])


def test_importing_the_charm_imports_no_storage_library():
    assert _loaded_after("import charm") == []


def test_importing_the_backends_imports_no_storage_library():
    assert _loaded_after("import backup.s3, backup.azure, backup.relations, backup.settings") == []


# A charm holding a BackupStorage, run through one hook with the given relations.
HOOK_WITH = textwrap.dedent(
    """
    import ops
    from ops import testing
    from backup.relations import BackupStorage

    class Host(ops.CharmBase):
        def __init__(self, framework):
            super().__init__(framework)
            self.storage = BackupStorage(self)

    meta = {"name": "host", "requires": {
        "s3-parameters": {"interface": "s3"}, "azure-storage": {"interface": "azure_storage"}}}
    ctx = testing.Context(Host, meta=meta)
    ctx.run(ctx.on.update_status(), testing.State(relations=RELATIONS))
    """
)


def test_a_charm_without_a_storage_relation_builds_no_library_object():
    assert _loaded_after(HOOK_WITH.replace("RELATIONS", "[]")) == []


def test_the_library_is_loaded_once_the_relation_exists():
    # The control for the test above: the same probe sees the library when it is used.
    relations = '[testing.Relation("s3-parameters")]'
    assert "object_storage" in _loaded_after(HOOK_WITH.replace("RELATIONS", relations))
