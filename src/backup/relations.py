"""The two storage relations (`s3-parameters`, `azure-storage`) and the store they give.

The relation protocol is object-storage-charmlib's (`object_storage`, PyPI 1.0.0): its
requirer writes what a provider waits for (`requested-secrets`, `version`, and for a v0
provider a placeholder `bucket`/`container`) and reads back the provider's data, resolving
a v1 provider's credentials secret. Its requirer objects observe events, so they are built
only for a relation that exists: a deployment without one imports neither the library
(about 25-45 ms on top of ops) nor boto3 or azure-storage-blob (about a second each), and
the charm reads the data only when an action asks for the store.

The charm builds one `BackupStorage` in `__init__` and asks it for `store()` (or
`settings_summary()`) when a backup action runs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import ops

from backup import S3_ENDPOINT, STORAGE_ENDPOINTS
from backup.settings import AzureSettings, S3Settings, StorageNotReady, parse_azure, parse_s3

if TYPE_CHECKING:
    from backup.store import ObjectStore

logger = logging.getLogger(__name__)

ENDPOINTS = STORAGE_ENDPOINTS

NOTHING_RELATED = (
    "no object storage: relate s3-integrator (s3-parameters) or "
    "azure-storage-integrator (azure-storage)"
)
BOTH_RELATED = "both s3-parameters and azure-storage are related: remove one of the two relations"


class BackupStorage:
    """The object storage the backup actions use, from whichever storage relation exists."""

    def __init__(self, charm: ops.CharmBase):
        self._charm = charm
        self._requirers: dict[str, Any] = {}
        for endpoint in ENDPOINTS:
            if self._relation(endpoint) is not None:
                self._requirers[endpoint] = _build_requirer(charm, endpoint)

    def settings(self) -> S3Settings | AzureSettings:
        """The related storage's settings; StorageNotReady names what is missing."""
        related = [endpoint for endpoint in ENDPOINTS if self._relation(endpoint) is not None]
        if not related:
            raise StorageNotReady(NOTHING_RELATED)
        if len(related) > 1:
            raise StorageNotReady(BOTH_RELATED)
        endpoint = related[0]
        data = self._provider_data(endpoint)
        return parse_s3(data) if endpoint == S3_ENDPOINT else parse_azure(data)

    def store(self) -> ObjectStore:
        """A store for the related bucket (or container) and path."""
        settings = self.settings()
        if isinstance(settings, S3Settings):
            from backup.s3 import S3Store

            return S3Store(settings)
        from backup.azure import AzureStore

        return AzureStore(settings)

    def settings_summary(self) -> dict[str, str]:
        """Where backups go, safe to show anyone who can run actions (no credential)."""
        try:
            return self.settings().summary()
        except StorageNotReady as not_ready:
            return {"backend": "none", "problem": not_ready.message}

    def _relation(self, endpoint: str) -> ops.Relation | None:
        relations = self._charm.model.relations[endpoint]
        return relations[0] if relations else None

    def _provider_data(self, endpoint: str) -> dict[str, str]:
        """The provider's data, credentials from its secret resolved, or StorageNotReady."""
        relation = self._relation(endpoint)
        if relation is None or relation.app is None:
            raise StorageNotReady(f"{endpoint} relation: waiting for the provider to join")
        requirer = self._requirers.get(endpoint)
        if requirer is None:  # related during this hook, after the charm was built
            requirer = self._requirers[endpoint] = _build_requirer(self._charm, endpoint)
        try:
            data = requirer.fetch_relation_data([relation.id])[relation.id]
        except ops.SecretNotFoundError:
            raise StorageNotReady(
                f"{endpoint} relation: the provider's credentials secret is not readable "
                "(not granted to this application, or removed)"
            ) from None
        except _library_errors() as error:
            # The library parses both sides' databags; never show what it choked on.
            raise StorageNotReady(
                f"{endpoint} relation data is not readable ({type(error).__name__})"
            ) from None
        if not data:
            raise StorageNotReady(f"{endpoint} relation: the provider has not sent its settings")
        return data


def _library_errors() -> tuple[type[Exception], ...]:
    """What the library raises on data it cannot use (it is imported by then)."""
    from object_storage.exceptions import DataInterfacesError

    return (DataInterfacesError, ops.ModelError, ValueError, TypeError, KeyError, AttributeError)


def _build_requirer(charm: ops.CharmBase, endpoint: str) -> Any:
    """The library's requirer for ``endpoint``, guarded against hostile provider data."""
    if endpoint == S3_ENDPOINT:
        from object_storage import S3Requirer as Requirer
    else:
        from object_storage import AzureStorageRequirer as Requirer  # type: ignore[assignment]

    class GuardedRequirer(Requirer):
        """The library's requirer, whose relation-changed handler never fails the hook.

        It parses the provider's `version` with float() and follows secret URIs the
        provider names; bad values would raise out of the hook. The charm reads the
        data again when an action needs it and reports any problem there, so here a
        problem is only logged, by exception type.
        """

        def _diff(self, event: ops.RelationChangedEvent) -> Any:
            """The library's diff, remembering digests rather than the provider's values.

            The library keeps a copy of the provider's databag in this charm's own databag
            (key `data`) to tell what changed; a v0 provider's databag holds the secret
            key in plain text, and a copy would put it in this charm's relation data too.
            """
            return _digest_diff(event, self.relation_data.data_component)

        def _on_relation_changed_event(self, event: ops.RelationChangedEvent) -> None:
            try:
                super()._on_relation_changed_event(event)
            except _library_errors() as error:
                logger.warning(
                    "%s relation data not usable yet (%s)", endpoint, type(error).__name__
                )

    return GuardedRequirer(charm, endpoint)


def _digest_diff(event: ops.RelationChangedEvent, ours: ops.Unit | ops.Application | None) -> Any:
    """Which of the provider's keys were added, changed or deleted since the last event.

    Kept in our databag's `data` key as a digest per key (the same key the library uses,
    so a charm revision using the library's own diff reads it as "changed").
    """
    import hashlib
    import json

    from object_storage.utils import Diff

    if ours is None or event.app is None:
        return Diff([], [], [])
    databag = event.relation.data[ours]
    try:
        old = json.loads(databag.get("data") or "{}")
    except ValueError:
        old = {}
    old = old if isinstance(old, dict) else {}
    new = {
        key: hashlib.sha256(value.encode()).hexdigest()
        for key, value in event.relation.data[event.app].items()
        if key != "data"
    }
    databag["data"] = json.dumps(new, sort_keys=True)
    return Diff(
        new.keys() - old.keys(),
        {key for key in old.keys() & new.keys() if old[key] != new[key]},
        old.keys() - new.keys(),
    )
