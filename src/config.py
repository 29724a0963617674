"""Typed charm configuration: parsing, validation and the profile defaults.

Every bad value becomes a `ConfigError` that names the option, the value and what is
allowed; the charm shows it as a blocked status and keeps the workload on its last good
configuration.
"""

from __future__ import annotations

import enum
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import yaml

_OPTION_NAMES_FILE = pathlib.Path(__file__).with_name("kurrentdb_option_names.txt")


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

# Options the charm renders itself. Setting them through `extra-options` would fight the
# charm (paths, addresses, TLS, clustering, credentials) or break its assumptions (it needs
# the admin API, gossip and stats endpoints, and logs on stdout).
CHARM_OWNED_OPTIONS = frozenset(
    {
        # paths and process
        "Config", "Db", "Index", "Log", "LogConfig", "DisableLogFile", "MemDb",
        "Help", "Version", "WhatIf", "AllowUnknownOptions",
        # security
        "Insecure", "Dev", "RemoveDevCerts", "DefaultAdminPassword", "DefaultOpsPassword",
        "TelemetryOptout", "AuthenticationType", "AuthenticationConfig",
        "CertificateFile", "CertificatePrivateKeyFile", "CertificatePassword",
        "CertificatePrivateKeyPassword", "TrustedRootCertificatesPath",
        "CertificateReservedNodeCommonName", "CertificateStoreLocation", "CertificateStoreName",
        "CertificateSubjectName", "CertificateThumbprint", "TrustedRootCertificateStoreName",
        "TrustedRootCertificateStoreLocation", "TrustedRootCertificateSubjectName",
        "TrustedRootCertificateThumbprint",
        # network and cluster
        "NodeIp", "ReplicationIp", "NodePort", "ReplicationPort", "ClusterSize",
        "DiscoverViaDns", "ClusterDns", "ClusterGossipPort", "GossipSeed",
        "NodeHostAdvertiseAs", "ReplicationHostAdvertiseAs", "AdvertiseHostToClientAs",
        "AdvertiseNodePortToClientAs", "NodePortAdvertiseAs", "ReplicationTcpPortAdvertiseAs",
        "ReadOnlyReplica", "Archiver",
        # endpoints the charm relies on
        "DisableAdminUi", "DisableGossipOnHttp", "DisableStatsOnHttp",
        # set through their own config options
        "LogLevel", "RunProjections", "StartStandardProjections",
    }
)  # fmt: skip

# Nested plugin sections: KurrentDB checks only top-level option names, so these sections
# may hold any keys; the plugin validates them when it starts.
PLUGIN_SECTIONS = frozenset(
    {
        "Licensing", "TcpPlugin", "SecondaryIndexing", "AutoScavenge", "UserCertificates",
        "EncryptionAtRest", "OpenTelemetry", "Metrics",
    }
)  # fmt: skip


@cache
def kurrentdb_option_names() -> frozenset[str]:
    """Every valid top-level KurrentDB option name (an unknown option stops KurrentDB)."""
    return frozenset(_OPTION_NAMES_FILE.read_text().split())


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
        shown = str(self.value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        return f"invalid config {self.option}={shown!r}: {self.allowed}"


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
    def from_stored(cls, stored: Mapping[str, Any]) -> CharmConfig:
        """Rebuild a configuration saved with `to_stored`."""
        return cls(
            profile=Profile(stored["profile"]),
            log_level=stored["log-level"],
            run_projections=RunProjections(stored["run-projections"]),
            start_standard_projections=bool(stored["start-standard-projections"]),
            extra_options=dict(stored["extra-options"]),
            system_users=stored.get("system-users"),
        )


def parse_config(raw: Mapping[str, Any]) -> CharmConfig:
    """Validate the raw Juju config; raise `ConfigError` on the first bad value."""
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
        extra_options=parse_extra_options(raw.get("extra-options", "")),
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


def parse_extra_options(text: str) -> dict[str, Any]:
    """Parse `extra-options`: a YAML map of real KurrentDB options the charm does not own."""
    if not text or not text.strip():
        return {}
    try:
        options = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(
            "extra-options", text, "must be a YAML map of KurrentDB options"
        ) from None
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ConfigError("extra-options", text, "must be a YAML map of KurrentDB options")
    known = kurrentdb_option_names()
    unknown = sorted(str(k) for k in options if k not in known and k not in PLUGIN_SECTIONS)
    if unknown:
        raise ConfigError(
            "extra-options", ", ".join(unknown), "unknown KurrentDB option names (see its docs)"
        )
    owned = sorted(k for k in options if k in CHARM_OWNED_OPTIONS)
    if owned:
        raise ConfigError("extra-options", ", ".join(owned), "managed by the charm, not settable")
    for name, value in options.items():
        if name in PLUGIN_SECTIONS:
            if not isinstance(value, dict):
                raise ConfigError("extra-options", name, "a plugin section must be a YAML map")
            if name == "Metrics" and "ExpectedScrapeIntervalSeconds" in value:
                raise ConfigError(
                    "extra-options",
                    "Metrics.ExpectedScrapeIntervalSeconds",
                    "managed by the charm (it follows the profile's scrape interval)",
                )
        elif not _is_option_value(value):
            raise ConfigError(
                "extra-options", f"{name}: {value}", "values must be scalars or lists of scalars"
            )
    return options


def _is_option_value(value: object) -> bool:
    scalar = (str, int, float, bool)
    if isinstance(value, scalar):
        return True
    return isinstance(value, list) and all(isinstance(item, scalar) for item in value)
