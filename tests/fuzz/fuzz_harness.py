"""What every fuzz example does: a fresh unit, one or more hooks, and the same checks after each.

An example starts from a unit that already runs (built once per module by the `world`
fixture), copied onto fresh temporary volumes with a fresh `testing.Context`, so examples
never share state. After each hook:

- no uncaught exception (`UncaughtCharmError`) - a hook error;
- no secret, in any encoding, in juju-log, the unit and app statuses, action results and
  failure messages, or any databag the charm writes - a leak. No password belongs in
  relation data at all: the scrape job Prometheus gets carries no credentials (every node
  serves /metrics anonymously), so one with `basic_auth` or any other credential field is a
  leak too, whatever it holds;
- no status that misleads: more than one line, an empty message where one is due,
  "None", a sentence that stops at "is", a Python exception's name.

Every count goes into `STATS`, which `tests/fuzz/conftest.py` prints as the issue's table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, settings
from ops import testing
from scenario.errors import UncaughtCharmError
from scenario_fixtures import ADMIN_PASSWORD, OPS_PASSWORD, Volumes
from secret_forms import encodings

from charm import KurrentDBCharm
from workload import paths

EXAMPLES_ENV = "KURRENTDB_FUZZ_EXAMPLES"


def fuzz_settings(examples: int) -> settings:
    """Seeded (derandomized) and bounded; `KURRENTDB_FUZZ_EXAMPLES=2000` runs longer."""
    wanted = os.environ.get(EXAMPLES_ENV)
    return settings(
        max_examples=int(wanted) if wanted else examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- the tally -------------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    cases: int = 0
    hooks: int = 0
    hook_errors: int = 0
    leaks: int = 0
    misleading: int = 0
    seconds: float = 0.0  # in hooks


SLOW_HOOK = 1.0
SLOW: list[tuple[float, str, str]] = []  # hooks slower than SLOW_HOOK: (seconds, surface, event)


STATS: dict[str, Tally] = {}


def tally(surface: str) -> Tally:
    return STATS.setdefault(surface, Tally())


# --- secrets in every encoding -----------------------------------------------------------------


def _charm_vocabulary() -> str:
    """Every text the charm ships (its code, templates and YAML): what it writes anyway."""
    root = pathlib.Path(__file__).resolve().parents[2]
    files = [*root.joinpath("src").rglob("*"), *root.joinpath("templates").rglob("*")]
    files += [root / name for name in ("metadata.yaml", "config.yaml", "actions.yaml")]
    return "\n".join(f.read_text(errors="ignore") for f in files if f.is_file())


# Hypothesis draws text from the constants of the code under test too, so a generated
# password can be one of the charm's own words ("extra-option"): finding that in the
# charm's output is no leak.
_VOCABULARY = _charm_vocabulary()


def distinctive(secret: str) -> bool:
    """Long and varied enough that finding it by chance in a log line is not a leak, and
    not one of the charm's own words."""
    return len(secret.strip()) >= 8 and len(set(secret)) > 3 and secret not in _VOCABULARY


PUBLIC_SECRET_KEYS = frozenset({"username", "tls-ca", "tls"})


def secret_values(*states: testing.State, extra: tuple[str, ...] = ()) -> set[str]:
    """Every secret value the charm holds or was given.

    Certificates are public, and so are their fingerprints (`ca-fingerprint` beside a node
    certificate; the CA switch names roots by fingerprint in peer data), and so are a client
    user's login and the CA bundle in a `database` answer (`username`, `tls-ca`, `tls`).
    """
    values = {ADMIN_PASSWORD, OPS_PASSWORD, *extra}
    for state in states:
        for secret in state.secrets:
            for content in (secret.tracked_content, secret.latest_content or {}):
                for key, value in content.items():
                    public = key in PUBLIC_SECRET_KEYS or key.endswith("fingerprint")
                    if "certificate" not in key and not public:
                        values.add(value)
    return {v for v in values if isinstance(v, str) and distinctive(v)}


# --- misleading statuses -----------------------------------------------------------------------

_PYTHON_ERRORS = re.compile(
    r"\b(KeyError|TypeError|ValueError|AttributeError|IndexError|RecursionError|"
    r"UnicodeDecodeError|JSONDecodeError|Traceback)\b"
)


_USER_VALUE = re.compile(r"^invalid config [\w.-]+=('.*?'|\".*?\"): ")


def misleading(status: testing.StatusBase) -> str | None:
    """Why this status misleads whoever reads it, or None.

    The user's own value, quoted in an "invalid config" status, is theirs to word.
    """
    message = status.message
    if "\n" in message or "\r" in message:
        return "more than one line"
    if status.name in ("blocked", "waiting", "maintenance") and not message.strip():
        return "no message"
    if len(message) > 400:
        return "longer than 400 characters"
    message = _USER_VALUE.sub("invalid config: ", message)
    if re.search(r"\bNone\b", message):
        return "says None"
    if re.search(r"\bis\s*$", message) or (
        "KurrentDB node is " in message and re.search(r"node is\s*($|[;(])", message)
    ):
        return "stops at 'is'"
    if _PYTHON_ERRORS.search(message):
        return "names a Python exception"
    return None


# --- one example -------------------------------------------------------------------------------


@dataclasses.dataclass
class Hook:
    """One hook's outcome."""

    state: testing.State
    logs: list[str]
    results: dict[str, Any] | None
    failure: str | None  # an action's failure message

    @property
    def status(self) -> testing.StatusBase:
        return self.state.unit_status


class World:
    """What every example of a module starts from: a running, related leader.

    Not a dataclass: hypothesis would print all of it with a failing example.
    """

    def __init__(self, base: testing.State, volumes: Volumes, double: Any, reset_double: Any):
        self.base = base
        self.volumes = volumes
        self.double = double  # doubles.kurrentdb.KurrentDBDouble
        self.reset_double = reset_double  # () -> None: the double as a fresh node

    def __repr__(self) -> str:
        return "World(<a running leader>)"


class Example:
    """A fresh unit for one hypothesis example (`with example(world, surface) as ex`)."""

    def __init__(self, world: World, surface: str, root: pathlib.Path):
        self.world = world
        self.surface = surface
        self.volumes = Volumes(etc=root / "etc", data=root / "data")
        shutil.copytree(world.volumes.etc, self.volumes.etc, symlinks=True)
        shutil.copytree(world.volumes.data, self.volumes.data, symlinks=True)
        self.state = remount(world.base, self.volumes)
        self.ctx: testing.Context[KurrentDBCharm] = None  # type: ignore[assignment]
        self.extra_secrets: tuple[str, ...] = ()
        self.tally = tally(surface)

    @property
    def config_file(self) -> str:
        path = self.volumes.host_path(paths.CONFIG_FILE)
        return path.read_text() if path.exists() else ""

    def run(self, event: Any, state: testing.State | None = None, *, check: bool = True) -> Hook:
        """Run one hook; count and re-raise a hook error; check leaks and the status."""
        state = state if state is not None else self.state
        self.tally.hooks += 1
        failure = None
        logs_before = len(self.ctx.juju_log)
        started = time.monotonic()
        try:
            out = self.ctx.run(event, state)
        except testing.ActionFailed as e:
            assert e.state is not None
            out, failure = e.state, e.message
        except UncaughtCharmError:
            self.tally.hook_errors += 1
            raise
        elapsed = time.monotonic() - started
        self.tally.seconds += elapsed
        if elapsed > SLOW_HOOK:
            SLOW.append((elapsed, self.surface, repr(event)[:120]))
        hook = Hook(
            state=out,
            logs=[line.message for line in self.ctx.juju_log[logs_before:]],
            results=self.ctx.action_results,
            failure=failure,
        )
        if check:
            self.check(hook, state)
        return hook

    def check(self, hook: Hook, before: testing.State) -> None:
        leaks = find_leaks(hook, before, self.extra_secrets)
        if leaks:
            self.tally.leaks += 1
            raise AssertionError(f"secret leaked: {leaks}")
        for status in (hook.state.unit_status, hook.state.app_status):
            why = misleading(status)
            if why:
                self.fail_status(f"{status!r}: {why}")

    def fail_status(self, why: str) -> None:
        self.tally.misleading += 1
        raise AssertionError(f"misleading status: {why}")


@contextlib.contextmanager
def example(world: World, surface: str) -> Iterator[Example]:
    tally(surface).cases += 1
    world.reset_double()
    with tempfile.TemporaryDirectory(prefix="kdb-fuzz-") as tmp:
        ex = Example(world, surface, pathlib.Path(tmp))
        with testing.Context(KurrentDBCharm) as ctx:
            ex.ctx = ctx
            yield ex


def remount(state: testing.State, volumes: Volumes) -> testing.State:
    """The same state with the workload container's volumes at other host directories."""
    container = state.get_container(paths.CONTAINER)
    mounts = {
        "etc": testing.Mount(location="/etc", source=volumes.etc),
        "data": testing.Mount(location=paths.DATA_DIR, source=volumes.data),
    }
    return dataclasses.replace(state, containers={dataclasses.replace(container, mounts=mounts)})


# --- leaks -------------------------------------------------------------------------------------

METRICS_RELATION = "metrics-endpoint"


def find_leaks(hook: Hook, before: testing.State, extra: tuple[str, ...]) -> list[str]:
    """Where a secret shows, as "<place>: <which form>" (empty: nowhere it must not)."""
    secrets = secret_values(before, hook.state, extra=extra)
    places: list[tuple[str, str]] = [(f"juju-log[{i}]", line) for i, line in enumerate(hook.logs)]
    places += [
        ("unit status", hook.state.unit_status.message),
        ("app status", hook.state.app_status.message),
        ("workload version", hook.state.workload_version),
    ]
    if hook.failure is not None:
        places.append(("action failure", hook.failure))
    if hook.results is not None:
        results = dict(hook.results)
        if set(results) == {"username", "password"}:
            results.pop("password")  # get-password: the one place a password is the answer
        places.append(("action results", json.dumps(results, ensure_ascii=False)))
    found = []
    for relation in hook.state.relations:
        for key, value in relation.local_app_data.items():
            places.append((f"{relation.endpoint} app {key}", value))
        for key, value in relation.local_unit_data.items():
            places.append((f"{relation.endpoint} unit {key}", value))
        if relation.endpoint == METRICS_RELATION:
            found += [
                f"{relation.endpoint} app scrape_jobs: {field} in a job"
                for field in scrape_credentials(relation.local_app_data.get("scrape_jobs"))
            ]
    for secret in secrets:
        forms = encodings(secret)
        for place, text in places:
            for form in forms:
                if form and form in text:
                    found.append(f"{place}: {form[:12]}...")
    return found


# Prometheus scrape_config fields that carry a credential (a password, token or key), or
# point Prometheus at a file that does.
SCRAPE_CREDENTIAL_FIELDS = frozenset(
    {"basic_auth", "authorization", "bearer_token", "bearer_token_file", "oauth2"}
)
TLS_CREDENTIAL_FIELDS = frozenset({"key", "key_file", "cert", "cert_file"})


def scrape_credentials(jobs: str | None) -> list[str]:
    """The credential fields in the published scrape jobs (none may have any)."""
    found = []
    for job in json.loads(jobs or "[]"):
        found += sorted(SCRAPE_CREDENTIAL_FIELDS & set(job))
        found += [
            f"tls_config.{f}"
            for f in sorted(TLS_CREDENTIAL_FIELDS & set(job.get("tls_config", {})))
        ]
    return found
