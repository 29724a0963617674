"""Validate metadata.yaml, config.yaml and actions.yaml with charmcraft's own models.

Runs under charmcraft's interpreter ($CHARMCRAFT_PYTHON, see scripts/run-tests.sh), not the
project venv: charmcraft's dependency tree conflicts with the charm's. Usage:

    $CHARMCRAFT_PYTHON tests/unit/charmcraft_validate.py [PROJECT_DIR...]

Prints a JSON object mapping each project directory to its list of errors, and exits 1 if
any has errors. Several directories per run, because importing charmcraft takes seconds.
On top of charmcraft's rules it checks what charmcraft lets through but Juju or a user would
trip over later (wrong-typed defaults, containers without resources, open action schemas).
"""

from __future__ import annotations

import json
import keyword
import pathlib
import sys
from typing import Any

import pydantic
import yaml
from charmcraft import models
from charmcraft.models.actions import JujuActions
from charmcraft.models.config import JujuConfig
from charmcraft.models.metadata import CharmMetadata, CharmMetadataLegacy

try:  # charmcraft does not depend on jsonschema; use it when the venv happens to have it.
    import jsonschema
except ImportError:
    jsonschema = None

# Juju's strict notion of each config option type. charmcraft's pydantic models coerce
# ("yes" passes as a boolean, 5 as a string, "1.5" as a float); Juju refuses those defaults.
CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (int, float),
    "boolean": (bool,),
    "secret": (str,),
}
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
    "null": (type(None),),
}


def _pydantic_errors(where: str, err: pydantic.ValidationError) -> list[str]:
    return [f"{where}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]


def _load(path: pathlib.Path) -> Any:
    with path.open() as f:
        return yaml.safe_load(f)


def check_project(project: pathlib.Path) -> list[str]:
    """What `charmcraft pack` does first: merge the legacy files into charmcraft.yaml."""
    try:
        models.CharmcraftProject.from_yaml_file(project / "charmcraft.yaml")
    except Exception as e:  # CraftValidationError and friends carry readable text
        return [f"charmcraft.yaml (+ metadata/config/actions.yaml): {e}"]
    return []


def check_metadata(md: Any) -> list[str]:
    """Validate metadata.yaml; see the module docstring for the checks beyond charmcraft."""
    if not isinstance(md, dict):
        return ["metadata.yaml: not a mapping"]
    errors: list[str] = []
    # Legacy model: what `charmcraft analyse` reads; CharmMetadata: charmcraft's stricter
    # model (charm name rules, real URLs for docs/source/issues/website).
    for model in (CharmMetadataLegacy, CharmMetadata):
        try:
            model.model_validate(dict(md))
        except pydantic.ValidationError as e:
            errors += _pydantic_errors(f"metadata.yaml ({model.__name__})", e)

    # `or {}`: a bare `name:` entry loads as None.
    resources = {k: v or {} for k, v in (md.get("resources") or {}).items()}
    storage = {k: v or {} for k, v in (md.get("storage") or {}).items()}
    for name, res in resources.items():
        rtype = res.get("type")
        if rtype not in ("oci-image", "file"):
            errors.append(f"metadata.yaml: resource {name!r} has type {rtype!r}")
        if rtype == "file" and not res.get("filename"):
            errors.append(f"metadata.yaml: file resource {name!r} has no filename")
    for name, st in storage.items():
        if st.get("type") not in ("filesystem", "block"):
            errors.append(f"metadata.yaml: storage {name!r} has type {st.get('type')!r}")

    for cname, container in (md.get("containers") or {}).items():
        container = container or {}
        res = container.get("resource")
        if res not in resources:
            errors.append(f"metadata.yaml: container {cname!r} names undeclared resource {res!r}")
        elif resources[res].get("type") != "oci-image":
            errors.append(f"metadata.yaml: container {cname!r} resource {res!r} is not oci-image")
        for mount in container.get("mounts") or []:
            st = mount.get("storage")
            if st not in storage:
                errors.append(
                    f"metadata.yaml: container {cname!r} mounts undeclared storage {st!r}"
                )
            elif storage[st].get("type") != "filesystem":
                errors.append(f"metadata.yaml: container {cname!r} mounts non-filesystem {st!r}")
            if not (mount.get("location") or storage.get(st, {}).get("location")):
                errors.append(f"metadata.yaml: container {cname!r} mount of {st!r} has no location")

    # Juju: relation names are unique across peers/provides/requires, each has an interface,
    # and the "juju" prefixes are reserved for Juju's own endpoints.
    seen: set[str] = set()
    for section in ("peers", "provides", "requires"):
        for rname, rel in (md.get(section) or {}).items():
            if rname in seen:
                errors.append(f"metadata.yaml: relation {rname!r} is declared twice")
            seen.add(rname)
            if not isinstance((rel or {}).get("interface"), str):
                errors.append(f"metadata.yaml: {section}.{rname} has no interface")
            if rname == "juju" or rname.startswith("juju-"):
                errors.append(f"metadata.yaml: relation name {rname!r} is reserved by Juju")
    return errors


def check_config(cfg: Any) -> list[str]:
    """Validate config.yaml with charmcraft's JujuConfig plus Juju's strict default types."""
    if not isinstance(cfg, dict):
        return ["config.yaml: not a mapping"]
    errors = []
    try:
        JujuConfig.model_validate(cfg)
    except pydantic.ValidationError as e:
        errors += _pydantic_errors("config.yaml", e)
    for name, opt in (cfg.get("options") or {}).items():
        if not isinstance(opt, dict) or opt.get("type") not in CONFIG_TYPES:
            continue  # already reported by JujuConfig
        if not opt.get("description"):
            errors.append(f"config.yaml: option {name!r} has no description")
        if opt.get("default") is None:
            continue
        default, otype = opt["default"], opt["type"]
        # bool is an int in Python; Juju does not accept true for an int or float.
        if isinstance(default, bool) and otype != "boolean":
            ok = False
        else:
            ok = isinstance(default, CONFIG_TYPES[otype])
        if not ok:
            errors.append(
                f"config.yaml: option {name!r} default {default!r} is not of type {otype}"
            )
    return errors


def _schema_errors(value: Any, schema: dict) -> list[str]:
    """Where jsonschema is missing: check the type and enum keywords only."""
    errors = []
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        if not any(
            t in JSON_TYPES
            and isinstance(value, JSON_TYPES[t])
            and not (isinstance(value, bool) and t in ("integer", "number"))
            for t in types
        ):
            errors.append(f"{value!r} is not of type {types}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{value!r} is not one of {schema['enum']}")
    return errors


def check_actions(actions: Any) -> list[str]:
    """Validate actions.yaml with charmcraft's JujuActions rules and Juju's JSON schemas."""
    if actions is None:
        return []
    if not isinstance(actions, dict):
        return ["actions.yaml: not a mapping"]
    # charmcraft 4.5's JujuActions cannot be instantiated (its name regex is a pydantic
    # private attribute, so its validator crashes), so apply its rules with its own regex.
    name_re = JujuActions.__private_attributes__["_action_name_regex"].default
    errors = []
    for name, action in actions.items():
        where = f"actions.yaml: action {name!r}"
        if keyword.iskeyword(name):
            errors.append(f"{where}: name is a reserved Python keyword")
        if not name_re.match(name):
            errors.append(f"{where}: invalid action name")
        if not isinstance(action, dict):
            errors.append(f"{where}: not a mapping")
            continue
        if not action.get("description"):
            errors.append(f"{where}: missing a description")
        # An open schema lets typos in `juju run` parameter names through silently.
        if action.get("additionalProperties") is not False:
            errors.append(f"{where}: needs additionalProperties: false")
        params = action.get("params") or {}
        if not isinstance(params, dict):
            errors.append(f"{where}: params is not a mapping")
            continue
        for req in action.get("required") or []:
            if req not in params:
                errors.append(f"{where}: required parameter {req!r} is not declared")
        # The whole params block is the JSON schema Juju checks `juju run` arguments with.
        full = {"type": "object", "properties": params}
        if jsonschema is not None:
            try:
                jsonschema.validators.validator_for(full).check_schema(full)
            except jsonschema.SchemaError as e:
                errors.append(f"{where}: invalid JSON schema: {e.message}")
                continue
        for pname, schema in params.items():
            if not isinstance(schema, dict):
                errors.append(f"{where}: param {pname!r} is not a mapping")
                continue
            if not schema.get("description"):
                errors.append(f"{where}: param {pname!r} has no description")
            types = schema.get("type", [])
            for t in [types] if isinstance(types, str) else types:
                if t not in JSON_TYPES:  # jsonschema's check_schema catches this when present
                    errors.append(f"{where}: param {pname!r} has unknown type {t!r}")
            if "default" not in schema:
                continue
            if jsonschema is not None:
                validator = jsonschema.validators.validator_for(full)(schema)
                problems = [e.message for e in validator.iter_errors(schema["default"])]
            else:
                problems = _schema_errors(schema["default"], schema)
            errors += [f"{where}: param {pname!r} default: {p}" for p in problems]
    return errors


def validate(project: pathlib.Path) -> list[str]:
    """Return every problem found in the project's charm files (empty when all is well)."""
    errors = check_project(project)
    errors += check_metadata(_load(project / "metadata.yaml"))
    errors += check_config(_load(project / "config.yaml"))
    if (project / "actions.yaml").exists():
        errors += check_actions(_load(project / "actions.yaml"))
    return errors


def main() -> int:
    """Report the problems found in each project directory given (default: cwd)."""
    results = {d: validate(pathlib.Path(d)) for d in sys.argv[1:] or ["."]}
    print(json.dumps(results, indent=2))
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
