"""Typed charm configuration: parsing, validation and the profile defaults.

Every bad value becomes a `ConfigError` that names the option, the value and what is
allowed; the charm shows it as a blocked status and keeps the workload on its last good
configuration. `extra-options` are checked against the options of the KurrentDB version
the node runs (`options_for`), as KurrentDB stops on an option it does not know; which
KurrentDB versions the charm runs at all is `image_support`'s answer.
"""

from __future__ import annotations

import difflib
import enum
import json
import pathlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml

import option_values


class Profile(str, enum.Enum):
    """Environment profiles: each sets defaults that suit that kind of environment."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    UAT = "uat"
    PRODUCTION = "production"


class RunProjections(str, enum.Enum):
    """KurrentDB `RunProjections` values, as the charm's config spells them."""

    NONE = "none"
    SYSTEM = "system"
    ALL = "all"

    @property
    def kurrentdb_value(self) -> str:
        """The spelling KurrentDB uses (`None`, `System`, `All`)."""
        return self.value.capitalize()


# Canonical KurrentDB log levels (the server also accepts a few aliases; the charm offers
# one spelling for each level so that `juju config` values stay unambiguous).
LOG_LEVELS = ("Verbose", "Debug", "Information", "Warning", "Error", "Fatal")

PROFILE_LOG_LEVEL = {
    Profile.DEVELOPMENT: "Debug",
    Profile.STAGING: "Information",
    Profile.UAT: "Information",
    Profile.PRODUCTION: "Warning",
}

# How often Prometheus scrapes a node, by profile; KurrentDB sizes its "recent max" metric
# windows from the same number (Metrics:ExpectedScrapeIntervalSeconds).
PROFILE_SCRAPE_INTERVAL = {
    Profile.DEVELOPMENT: 15,
    Profile.STAGING: 30,
    Profile.UAT: 30,
    Profile.PRODUCTION: 60,
}

# The image metadata.yaml pins (`upstream-source`); a unit test checks they agree. The charm
# cannot see which image a unit runs, so before the node first answers /info the charm
# assumes this one.
DEFAULT_IMAGE = "docker.kurrent.io/kurrent-lts/kurrentdb:26.0.3"
DEFAULT_VERSION = DEFAULT_IMAGE.rpartition(":")[2]

# KurrentDB 25.x is refused (see `image_support`): it loads the YAML config file *before*
# metricsconfig.json and the config/*.json files, so the charm's settings there (its scrape
# interval in `Metrics:`) are overridden (v25.1.4 src/KurrentDB.Core/Configuration/
# KurrentConfiguration.cs: AddKurrentYamlConfigFile before AddSection("KurrentDB:Metrics");
# from v26.0.0 it comes after them). 25.0 and 25.1 are also short-term releases whose
# support ended when 26.0.0 came out (docs/server/release-schedule), and their images run
# as UID 1000 where 26.x runs as 1001 (Dockerfile), so data they wrote is not the 26.x
# user's.
OLDEST_SUPPORTED = (26, 0, 0)
SUPPORTED_IMAGES = f"use a KurrentDB 26.0 or newer image, e.g. {DEFAULT_IMAGE}"

# One option list per release line (src/kurrentdb_options/<first version>.txt), generated
# from ClusterVNodeOptions at the tags named in each file's header.
_OPTIONS_DIR = pathlib.Path(__file__).with_name("kurrentdb_options")

# Options and sections `extra-options` may not set, each with the reason the status gives.
# Match is case-insensitive, as KurrentDB's own is.
_SET_BY_CHARM = "set by the charm"
_ADDRESSES = "set by the charm (the pod's addresses, ports and DNS name)"
_TLS = "set by the charm (it gives KurrentDB its certificates as files)"
_CLUSTERING = "set by the charm (it forms the cluster from its units)"
_EXITS = "makes KurrentDB exit instead of serving"
_AUTHZ = "the charm's users and anonymous /gossip need the built-in authorization"
REFUSED_OPTIONS: Mapping[str, str] = {
    # paths and process
    "Config": _SET_BY_CHARM,
    "Db": "set by the charm (its storage)",
    "Index": "the index stays on the charm's storage, inside Db",
    "MemDb": "keeps nothing on disk: a restart would lose every event",
    "Log": "the charm sends logs to stdout only (DisableLogFile)",
    "DisableLogFile": "the charm sends logs to stdout only (DisableLogFile)",
    "LogConfig": "would replace the charm's logging (log-level, stdout)",
    "LogLevel": "use the charm's log-level option",
    "Help": _EXITS,
    "Version": _EXITS,
    "WhatIf": _EXITS,
    "RemoveDevCerts": _EXITS,
    "AllowUnknownOptions": "the charm refuses unknown options; it must not ignore them",
    # security
    "Insecure": "the charm always runs KurrentDB with TLS and authentication",
    # With the default ACLs (SystemSettings.cs) anyone reaching port 2113 could then read,
    # write and delete every user stream.
    "AllowAnonymousStreamAccess": "streams always need a KurrentDB user (the charm keeps it off)",
    "Dev": "dev mode uses its own certificates, not the charm's",
    "DefaultAdminPassword": "the charm manages the admin and ops passwords",
    "DefaultOpsPassword": "the charm manages the admin and ops passwords",
    "TelemetryOptout": "KurrentDB takes it only from the environment; in the file it stops",
    "AuthenticationType": "the charm's users need KurrentDB's internal authentication",
    "AuthenticationConfig": "the charm's users need KurrentDB's internal authentication",
    "AuthorizationType": _AUTHZ,
    "AuthorizationConfig": _AUTHZ,
    # A nested section, not an option: Authorization:DefaultPolicyType picks a policy
    # plugin (src/KurrentDB/AuthorizationPolicyRegistryFactory.cs).
    "Authorization": _AUTHZ,
    "OverrideAnonymousEndpointAccessForGossip": (
        "the charm reads /gossip without credentials for its health checks"
    ),
    # The charm sets it true so that Prometheus scrapes /metrics without credentials; it
    # opens /stats too, never streams or users (docs/explanation/security.md).
    "AllowAnonymousEndpointAccess": "set by the charm (Prometheus scrapes /metrics without a user)",
    # TrustedHttpAuthenticationProvider: the Kurrent-TrustedAuth header names the user
    # and groups, with no password.
    "EnableTrustedAuth": "lets any client act as any user, $admins too, by sending a header",
    # HttpEntityManager.LogRequest logs every header and body at Debug.
    "LogHttpRequests": "logs request headers and bodies: the charm's passwords would be logged",
    "CertificateFile": _TLS,
    "CertificatePrivateKeyFile": _TLS,
    "CertificatePassword": _TLS,
    "CertificatePrivateKeyPassword": _TLS,
    "TrustedRootCertificatesPath": _TLS,
    "CertificateReservedNodeCommonName": _TLS,
    "CertificateStoreLocation": _TLS,
    "CertificateStoreName": _TLS,
    "CertificateSubjectName": _TLS,
    "CertificateThumbprint": _TLS,
    "TrustedRootCertificateStoreName": _TLS,
    "TrustedRootCertificateStoreLocation": _TLS,
    "TrustedRootCertificateSubjectName": _TLS,
    "TrustedRootCertificateThumbprint": _TLS,
    # network
    "NodeIp": _ADDRESSES,
    "ReplicationIp": _ADDRESSES,
    "NodePort": _ADDRESSES,
    "ReplicationPort": _ADDRESSES,
    "NodeHostAdvertiseAs": _ADDRESSES,
    "ReplicationHostAdvertiseAs": _ADDRESSES,
    "NodePortAdvertiseAs": _ADDRESSES,
    "ReplicationTcpPortAdvertiseAs": _ADDRESSES,
    # /gossip's httpEndPointIp/Port become these, and the charm finds its own node by them.
    "AdvertiseHostToClientAs": "the charm finds its node in /gossip by the address this changes",
    "AdvertiseNodePortToClientAs": "the charm finds its node in /gossip by the port this changes",
    # cluster
    "ClusterSize": _CLUSTERING,
    "DiscoverViaDns": _CLUSTERING,
    "ClusterDns": _CLUSTERING,
    "ClusterGossipPort": _CLUSTERING,
    "GossipSeed": _CLUSTERING,
    "ReadOnlyReplica": "the charm runs every unit as a voting member",
    "Archiver": "the charm runs every unit as a voting member",
    "UnsafeAllowSurplusNodes": (
        "the charm's resize plans need surplus nodes to exit; as clones they can lose data"
    ),
    "QuorumSize": "KurrentDB computes it from ClusterSize; it cannot be set",
    # endpoints the charm relies on
    "DisableAdminUi": "the charm needs the admin API (resign, reload, shutdown)",
    "DisableGossipOnHttp": "the charm reads /gossip for its health checks",
    "DisableStatsOnHttp": "Prometheus scrapes /metrics, which this turns off",
    # set through the charm's own config options
    "RunProjections": "use the charm's run-projections option",
    "StartStandardProjections": "use the charm's start-standard-projections option",
}
# The names alone, for callers of the earlier API.
CHARM_OWNED_OPTIONS = frozenset(REFUSED_OPTIONS)

# Nested plugin sections: KurrentDB checks only top-level option names, so these sections
# may hold any keys; the plugin validates them when it starts.
PLUGIN_SECTIONS = frozenset(
    {
        "Licensing", "TcpPlugin", "SecondaryIndexing", "AutoScavenge", "UserCertificates",
        "EncryptionAtRest", "OpenTelemetry", "Metrics",
    }
)  # fmt: skip

# Keys of the `Metrics:` section (metricsconfig.json) the charm sets or depends on.
REFUSED_METRICS_KEYS: Mapping[str, str] = {
    "ExpectedScrapeIntervalSeconds": "set by the charm (it follows the profile's scrape interval)",
    # Legacy meter names switch the exporter to eventstore_* names (ApplicationBuilderExtensions).
    "Meters": "the charm's dashboards and alert rules need KurrentDB's own metric names",
}

# Names KurrentDB 25.0 removed (v24.10.14 -> v25.0.0 ClusterVNodeOptions), with their
# replacements, so the status can say what to use instead.
RENAMED_OPTIONS: Mapping[str, str] = {
    "ExtIp": "NodeIp",
    "HttpPort": "NodePort",
    "HttpPortAdvertiseAs": "NodePortAdvertiseAs",
    "AdvertiseHttpPortToClientAs": "AdvertiseNodePortToClientAs",
    "IntIp": "ReplicationIp",
    "IntTcpPort": "ReplicationPort",
    "IntTcpPortAdvertiseAs": "ReplicationTcpPortAdvertiseAs",
    "IntHostAdvertiseAs": "ReplicationHostAdvertiseAs",
    "IntTcpHeartbeatTimeout": "ReplicationHeartbeatTimeout",
    "IntTcpHeartbeatInterval": "ReplicationHeartbeatInterval",
}

Release = tuple[int, int, int]


@dataclass(frozen=True)
class OptionSpec:
    """One KurrentDB option: its type and the limits the server declares."""

    name: str
    type: str  # bool, int, long, double, string, ip, endpoints or enum
    choices: tuple[str, ...] = ()  # an enum's values (KurrentDB ignores their case)
    minimum: int | None = None
    maximum: int | None = None
    flags: frozenset[str] = frozenset()  # env-only, sensitive, deprecated, computed


@dataclass(frozen=True)
class OptionList:
    """The options of one KurrentDB release line, as its data file lists them."""

    first: Release  # the line's first release; the file is named after it
    tags: tuple[Release, ...]  # the releases verified to have exactly these options
    specs: Mapping[str, OptionSpec]  # by canonical name
    _by_lower: Mapping[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_lower", {name.lower(): name for name in self.specs})

    @property
    def label(self) -> str:
        """The releases it was verified for, e.g. `26.0.2-26.0.3`."""
        low, high = _format(self.tags[0]), _format(self.tags[-1])
        return low if low == high else f"{low}-{high}"

    @property
    def names(self) -> frozenset[str]:
        """The canonical option names."""
        return frozenset(self.specs)

    def canonical(self, name: str) -> str | None:
        """The canonical spelling of `name` (KurrentDB ignores case), or None if unknown."""
        return self._by_lower.get(name.lower())


@dataclass(frozen=True)
class VersionOptions:
    """The option list that applies to a KurrentDB version, and why, if it is not exact."""

    version: str  # the version asked about (`DEFAULT_VERSION` when none was given)
    options: OptionList
    # None when the list was verified for this very release; otherwise one sentence for a
    # log line or status suffix, e.g. that the version is newer than the lists the charm has.
    note: str | None = None


def parse_version(text: str | None) -> Release | None:
    """`26.0.3`, `26.0.3-rc.1` or `v26.1.0` as (26, 0, 3); None if it is not a version."""
    match = _VERSION.match((text or "").strip())
    if not match:
        return None
    major, minor, patch = match.group(1, 2, 3)
    return int(major), int(minor), int(patch or 0)


def version_from_cli(output: str) -> str | None:
    """The version in `KurrentDB --version` output (`KurrentDB version 26.0.3 ...`)."""
    match = re.search(r"\bversion\s+(v?\d+\.\d+(?:\.\d+)?\S*)", output)
    return match.group(1) if match else None


def image_support(version: str | None) -> str | None:
    """A blocked-status message when the image's KurrentDB is not supported, else None.

    `version` is /info's `dbVersion` or what `KurrentDB --version` printed; None means the
    image metadata.yaml pins. A version the charm cannot read is not blocked here (see
    `options_for` for the note).
    """
    parsed = parse_version(version)
    if parsed is None or parsed >= OLDEST_SUPPORTED:
        return None
    return f"KurrentDB {version} is not supported: {SUPPORTED_IMAGES}"


@cache
def option_lists() -> tuple[OptionList, ...]:
    """Every option list the charm has, oldest first."""
    lists = [_load_list(path) for path in _OPTIONS_DIR.glob("*.txt")]
    return tuple(sorted(lists, key=lambda option_list: option_list.first))


def options_for(version: str | None = None) -> VersionOptions:
    """The option list for a KurrentDB version: its own, or the closest older one.

    Each newer list holds every option of the older ones (a unit test checks it), so
    falling back to an older list can refuse an option the node has, never accept one it
    lacks.
    """
    asked = version or DEFAULT_VERSION
    lists = option_lists()
    parsed = parse_version(asked)
    if parsed is None:  # the oldest list: it refuses whatever some supported release lacks
        chosen = lists[0]
        note = f"cannot tell the KurrentDB version from {asked!r}"
        return VersionOptions(asked, chosen, f"{note}; checking options as for {chosen.label}")
    release = _is_release(asked)
    # A pre-release of X.Y.Z comes before X.Y.Z: it may lack what X.Y.Z added.
    older = [
        option_list
        for option_list in lists
        if option_list.first < parsed or (release and option_list.first == parsed)
    ]
    chosen = older[-1] if older else lists[0]
    if not release:
        why = f"KurrentDB {asked} is a pre-release or custom build"
    elif not older:
        why = f"KurrentDB {asked} is older than any option list the charm has"
    elif parsed not in chosen.tags:
        why = f"KurrentDB {asked} is newer than the releases the charm knows"
    else:
        return VersionOptions(asked, chosen)
    return VersionOptions(asked, chosen, f"{why}; checking options as for {chosen.label}")


def kurrentdb_option_names(version: str | None = None) -> frozenset[str]:
    """The valid top-level option names of a KurrentDB version (others stop it)."""
    return options_for(version).options.names


_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?(?:[-+.]\S*)?$")


def _is_release(text: str) -> bool:
    return re.fullmatch(r"v?\d+\.\d+\.\d+", text.strip()) is not None


def _format(version: Release) -> str:
    return ".".join(str(part) for part in version)


def _load_list(path: pathlib.Path) -> OptionList:
    first = parse_version(path.stem)
    if first is None:
        raise ValueError(f"{path.name}: the file name must be the line's first version")
    tags: tuple[Release, ...] = ()
    specs: dict[str, OptionSpec] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# tags:"):
            tags = tuple(v for v in map(parse_version, line[len("# tags:") :].split()) if v)
            continue
        if not line.strip() or line.startswith("#"):
            continue
        name, kind, *rest = line.split("\t")
        specs[name] = _spec(name, kind, rest[0].split() if rest else [])
    if not tags or not specs:
        raise ValueError(f"{path.name}: no '# tags:' line or no options")
    return OptionList(first, tags, specs)


def _spec(name: str, kind: str, extras: list[str]) -> OptionSpec:
    choices: tuple[str, ...] = ()
    if kind.startswith("enum:"):
        kind, choices = "enum", tuple(kind[len("enum:") :].split("|"))
    limits = dict(item.split("=", 1) for item in extras if "=" in item)
    return OptionSpec(
        name=name,
        type=kind,
        choices=choices,
        minimum=int(limits["min"]) if "min" in limits else None,
        maximum=int(limits["max"]) if "max" in limits else None,
        flags=frozenset(item for item in extras if "=" not in item),
    )


class ConfigError(ValueError):
    """A config value the charm cannot use."""

    def __init__(self, option: str, value: object, allowed: str):
        self.option = option
        self.value = value
        self.allowed = allowed
        super().__init__(self.message)

    @property
    def message(self) -> str:
        """A status message: the option, the value, what is allowed."""
        # Shortened after quoting, so that escapes cannot make it long again.
        shown = repr(str(self.value))
        if len(shown) > 42:
            shown = shown[:38] + "..." + shown[-1]
        return f"invalid config {self.option}={shown}: {self.allowed}"


@dataclass(frozen=True)
class CharmConfig:
    """The validated configuration the workload is rendered from."""

    profile: Profile = Profile.PRODUCTION
    log_level: str = PROFILE_LOG_LEVEL[Profile.PRODUCTION]
    run_projections: RunProjections = RunProjections.NONE
    start_standard_projections: bool = False
    extra_options: Mapping[str, Any] = field(default_factory=dict)
    system_users: str | None = None

    @property
    def scrape_interval(self) -> int:
        """Seconds between Prometheus scrapes, from the profile."""
        return PROFILE_SCRAPE_INTERVAL[self.profile]

    def to_stored(self) -> dict[str, Any]:
        """A JSON-friendly form, kept as the last good configuration."""
        return {
            "profile": self.profile.value,
            "log-level": self.log_level,
            "run-projections": self.run_projections.value,
            "start-standard-projections": self.start_standard_projections,
            "extra-options": dict(self.extra_options),
            "system-users": self.system_users,
        }

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any], version: str | None = None) -> CharmConfig:
        """Rebuild a configuration saved with `to_stored`, validated again.

        What was stored came from another unit, maybe another charm revision, and was
        valid for the KurrentDB that ran then: it is checked as a fresh config is, against
        `version`. Raises ConfigError.
        """
        extra = stored.get("extra-options") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError("extra-options", extra, "the stored value is not a map")
        start_standard = stored.get("start-standard-projections", False)
        if not isinstance(start_standard, bool):
            raise ConfigError("start-standard-projections", start_standard, "a boolean")
        raw = {
            key: stored[key]
            for key in ("profile", "log-level", "run-projections", "system-users")
            if isinstance(stored.get(key), str)
        }
        # JSON is YAML: the stored map goes through the same parser as the option.
        raw["extra-options"] = json.dumps(extra)
        raw["start-standard-projections"] = start_standard
        return parse_config(raw, version)


def parse_config(raw: Mapping[str, Any], version: str | None = None) -> CharmConfig:
    """Validate the raw Juju config; raise `ConfigError` on the first bad value.

    `version` is the KurrentDB version the node runs (/info's `dbVersion`); `extra-options`
    are checked against that version's options (None: the image metadata.yaml pins).
    """
    profile = _parse_enum(Profile, "profile", raw.get("profile", Profile.PRODUCTION.value))
    log_level = _parse_log_level(raw.get("log-level", ""), profile)
    run_projections = _parse_enum(
        RunProjections, "run-projections", raw.get("run-projections", "none")
    )
    system_users = raw.get("system-users") or None
    return CharmConfig(
        profile=profile,
        log_level=log_level,
        run_projections=run_projections,
        start_standard_projections=bool(raw.get("start-standard-projections", False)),
        extra_options=parse_extra_options(raw.get("extra-options", ""), version),
        system_users=str(system_users) if system_users else None,
    )


def _parse_enum(kind: type[enum.Enum], option: str, value: object) -> Any:
    try:
        return kind(str(value).strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ConfigError(option, value, f"allowed: {allowed}") from None


def _parse_log_level(value: object, profile: Profile) -> str:
    text = str(value).strip()
    if not text:
        return PROFILE_LOG_LEVEL[profile]
    for level in LOG_LEVELS:
        if text.lower() == level.lower():
            return level
    raise ConfigError("log-level", value, f"allowed: {', '.join(LOG_LEVELS)} or empty")


def parse_extra_options(text: str, version: str | None = None) -> dict[str, Any]:
    """Parse `extra-options`: a YAML map of real KurrentDB options the charm does not own."""
    if not text or not text.strip():
        return {}
    try:
        options = option_values.load(text)
    except option_values.OptionValueError as e:
        where = text if e.path == "extra-options" else e.path
        raise ConfigError("extra-options", where, e.allowed) from None
    except (yaml.YAMLError, RecursionError):
        raise ConfigError(
            "extra-options", text, "must be a YAML map of KurrentDB options"
        ) from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError("extra-options", text, "must be a YAML map of KurrentDB options")
    return validate_extra_options(options, version)


def validate_extra_options(
    options: Mapping[Any, Any], version: str | None = None
) -> dict[str, Any]:
    """Check parsed `extra-options` against a KurrentDB version's options.

    Returns them with each name in KurrentDB's spelling (it ignores case). Also for
    re-checking a stored configuration when the node's version changes.
    """
    applicable = options_for(version)
    option_list = applicable.options
    sections = {name.lower(): name for name in PLUGIN_SECTIONS}
    refused = {name.lower(): name for name in REFUSED_OPTIONS}
    canonical: dict[str, Any] = {}
    spelled: dict[str, list[str]] = {}
    unknown: list[str] = []
    for key, value in options.items():
        given = str(key)
        name = (
            option_list.canonical(given)
            or sections.get(given.lower())
            or refused.get(given.lower())
        )
        if name is None:
            unknown.append(given)
            continue
        spelled.setdefault(name, []).append(given)
        canonical[name] = value
    if unknown:
        _refuse(unknown, lambda name: _why_unknown(name, applicable))
    twice = sorted(name for name, given in spelled.items() if len(given) > 1)
    if twice:
        raise ConfigError(
            "extra-options",
            ", ".join(spelled[twice[0]]),
            "given twice (KurrentDB ignores the case of option names)",
        )
    owned = [name for name in canonical if name in REFUSED_OPTIONS]
    if owned:
        _refuse(owned, REFUSED_OPTIONS.__getitem__)
    refused_lower = {name.lower(): reason for name, reason in REFUSED_OPTIONS.items()}
    try:
        for name, value in canonical.items():
            option_values.check_plain(name, value)
            if name in PLUGIN_SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError("extra-options", name, "a plugin section must be a YAML map")
                if name == "Metrics":
                    _check_metrics(value)
                option_values.refuse_names_at_depth(
                    name, value, lambda key: refused_lower.get(key.lower())
                )
        option_values.check_known(canonical, option_list.specs)
    except option_values.OptionValueError as e:
        raise ConfigError("extra-options", f"{e.path}: {_as_written(e.value)}", e.allowed) from None
    return canonical


def _as_written(value: object) -> str:
    """A value as the user wrote it (`null`, `true`, `{"a": 1}`), never Python's `None`."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (ValueError, TypeError, RecursionError):
        return str(value)


def _refuse(names: list[str], reason: Callable[[str], str]) -> None:
    """Raise for the first bad name, with every other name that fails for the same reason."""
    names = sorted(names)
    why = reason(names[0])
    same = [name for name in names if reason(name) == why]
    rest = len(names) - len(same)
    more = f" (and {rest} more refused)" if rest else ""
    raise ConfigError("extra-options", ", ".join(same), why + more)


def _why_unknown(name: str, applicable: VersionOptions) -> str:
    version = applicable.version
    later = [
        option_list
        for option_list in option_lists()
        if option_list.first > applicable.options.first and option_list.canonical(name)
    ]
    if later:
        since = _format(later[0].first)
        return f"not in KurrentDB {version} (added in {since}): remove it or use a {since}+ image"
    renamed = {old.lower(): new for old, new in RENAMED_OPTIONS.items()}.get(name.lower())
    if renamed:
        return f"removed in KurrentDB 25.0: use {renamed}"
    known = sorted(applicable.options.names | PLUGIN_SECTIONS)
    close = difflib.get_close_matches(name, known, n=1)
    if not close:  # case-insensitive second try
        lower = {k.lower(): k for k in known}
        close = [lower[m] for m in difflib.get_close_matches(name.lower(), list(lower), n=1)]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"not a KurrentDB {version} option: remove it{hint}"


def _check_metrics(section: Mapping[Any, Any]) -> None:
    refused = {name.lower(): name for name in REFUSED_METRICS_KEYS}
    for key in section:
        name = refused.get(str(key).lower())
        if name:
            raise ConfigError("extra-options", f"Metrics.{key}", REFUSED_METRICS_KEYS[name])
