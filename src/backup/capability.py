"""The backup capability as the charm sees it: the storage relations and the backup actions.

`Backups` is built once in the charm's `__init__`; it observes its own actions:
- `create-backup` backs up this unit's node, online: a caught-up Follower is the source
  KurrentDB's docs recommend ("ensure that the node you choose to back up is up to date
  and connected to the cluster", docs/server/operations/backup.md), so on the leader of a
  multi-node cluster it fails naming the followers unless `force=true`. A scavenge must not
  run during a file-copy backup (same page): auto-scavenge is paused and a node scavenge
  stopped first, and auto-scavenge resumed afterwards, whatever happened.
- `list-backups` lists every backup under the related bucket and path, other clusters'
  included, so that a new cluster can find an old one's backups.
- `restore` (on the Juju leader) starts a restore of every node from one backup, without
  a scale-down: a leader-driven state machine in the peer relation (`restore.py`), each
  unit's steps on its own volume (`participant.py`, `swap.py`). The charm's reconcile
  asks `take_turn` first in every hook and honours what it returns: the node stays
  stopped between the swap and the start, and the cluster schedule pauses meanwhile.
Action results carry no secret, and a storage failure only its error code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import ops

from backup import RESTORE_KEY, RESTORE_MARKER, STORAGE_ENDPOINTS
from cluster import SERVING_ROLES

if TYPE_CHECKING:
    from backup.engine import BackupSummary
    from backup.manifest import SourceInfo
    from backup.participant import RestoreParticipant
    from backup.relations import BackupStorage
    from config import CharmConfig
    from kurrentdb_api import KurrentDBClient
    from node import NodeHealth
    from state import CharmState

logger = logging.getLogger(__name__)

# How long the action waits for auto-scavenge to finish pausing (it stops the node
# scavenge it runs first).
SCAVENGE_PAUSE_TIMEOUT = 60.0
SCAVENGE_POLL_SECONDS = 2.0
LIST_FORMATS = ("table", "json")
_TABLE_COLUMNS = (
    ("id", "backup_id"),
    ("state", "state"),
    ("finished", "finished_at"),
    ("application", "application"),
    ("model", "model"),
    ("unit", "unit"),
    ("kurrentdb", "kurrentdb_version"),
    ("size", "size"),
    ("new-bytes", "new_bytes"),
)


class BackupRefusedError(Exception):
    """This unit cannot take a backup now; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class RestoreTurn:
    """What a restore asks of this hook's reconcile."""

    holds_node_stopped: bool = False  # never start or restart KurrentDB now
    pauses_schedule: bool = False  # no rolling restart, resize or new grant now
    max_truncation: int | None = None  # the first start on restored data needs this limit


NO_RESTORE = RestoreTurn()
# Peer unit databag: when this unit's last backup began (seconds since the epoch).
LAST_BACKUP_KEY = "last-backup"


class Backups(ops.Object):
    """Backups of this unit's node to the related object storage."""

    def __init__(
        self,
        charm: ops.CharmBase,
        state: CharmState,
        health: Callable[[], NodeHealth],
        admin_client: Callable[[], KurrentDBClient],
        image_version: Callable[[], str | None],
        stop_node: Callable[[], None],
        workload_ids: Callable[[], tuple[int, int]],
    ):
        super().__init__(charm, "backups")
        self._charm = charm
        self._state = state
        self._health = health
        self._admin_client = admin_client
        self._image_version = image_version
        self._stop_node = stop_node
        self._workload_ids = workload_ids
        self._participant: RestoreParticipant | None = None
        self._storage: BackupStorage | None = None
        self.problem: ops.StatusBase | None = None  # this hook's restore trouble, if any
        self._waits_for: list[Callable[[], str | None]] = []
        # The storage library's objects observe their relation's events, so they must
        # exist in every hook where that relation does; a deployment without one pays
        # neither for them nor for parsing storage settings.
        if any(charm.model.relations[endpoint] for endpoint in STORAGE_ENDPOINTS):
            self._storage = self.storage
        charm.framework.observe(charm.on.create_backup_action, self._on_create_backup)
        charm.framework.observe(charm.on.list_backups_action, self._on_list_backups)
        charm.framework.observe(charm.on.restore_action, self._on_restore)

    def wait_for(self, reason: Callable[[], str | None]) -> None:
        """Another capability's reason to refuse backups and restores for now (a refresh)."""
        self._waits_for.append(reason)

    def _refused_for(self, event: ops.ActionEvent) -> bool:
        for reason in self._waits_for:
            if (why := reason()) is not None:
                event.fail(why)
                return True
        return False

    def busy(self) -> str | None:
        """Why the cluster may not lose a node for something else now, or None.

        A restore running, or a backup of this application (its alive object in the bucket).
        """
        participant = self._restore_participant()
        plan = participant.plan() if participant is not None else None
        if plan is not None and plan.running:
            return f"restore {plan.restore_id} is running"
        if self._storage is None:
            return None
        from backup import engine
        from backup.settings import StorageNotReady
        from backup.store import StorageError

        try:
            running = engine.running_backups(
                self.storage.store(), self._charm.app.name, self._charm.model.uuid
            )
        except (StorageNotReady, StorageError):
            return None  # no usable storage: no backup can be running there
        return f"a backup is running on {running[0].unit}" if running else None

    @property
    def storage(self) -> BackupStorage:
        """The related object storage (built on first use)."""
        if self._storage is None:
            from backup.relations import BackupStorage

            self._storage = BackupStorage(self._charm)
        return self._storage

    # --- the reconcile's entry points -------------------------------------------------

    def take_turn(self, progress: Callable[[str], None] | None = None) -> RestoreTurn:
        """Every hook, before anything may start KurrentDB: this unit's restore step."""
        participant = self._restore_participant()
        if participant is None:
            return NO_RESTORE
        from backup.restore import Action, start_max_truncation
        from backup.swap import SwapError

        reports = self._state.unit_reports()
        serving = {u: r.role in SERVING_ROLES for u, r in reports.items()}
        try:
            step = participant.take_turn(serving, self._charm.unit.is_leader(), progress)
        except SwapError as e:
            # Never guess with moved-aside data: keep the node stopped and say why.
            self.problem = ops.BlockedStatus(
                f"the restore marker on the data volume is unusable ({e}): "
                "check <volume>/.restore by hand"
            )
            self._stop_node()
            return RestoreTurn(holds_node_stopped=True, pauses_schedule=True)
        if step.holds_node_stopped:
            self._stop_node()  # no-op unless it runs
        if self._charm.unit.is_leader():
            self._clear_fresh_backup_request(participant)
        limit = start_max_truncation(step.truncation) if step.action is Action.START else None
        return RestoreTurn(step.holds_node_stopped, step.pauses_schedule, limit)

    def _note_backup_taken(self, started: float) -> None:
        """Tell the leader (peer unit databag) that a backup began at ``started``.

        It is the fresh backup a restore asks for when it began after the restore ended.
        """
        relation = self._state.peer_relation
        if relation is not None:
            relation.data[self._charm.unit][LAST_BACKUP_KEY] = f"{started:.3f}"

    def _clear_fresh_backup_request(self, participant: RestoreParticipant) -> None:
        """Leader: drop the restore's fresh-backup request once some unit took one."""
        from backup.restore import fresh_backup_taken

        relation, plan = self._state.peer_relation, participant.plan()
        if relation is None or plan is None or not plan.fresh_backup_needed:
            return
        times = []
        for unit in (self._charm.unit, *relation.units):
            try:
                times.append(float(relation.data[unit].get(LAST_BACKUP_KEY, "")))
            except ValueError:
                continue  # absent or not a number: no evidence
        if times and (cleared := fresh_backup_taken(plan, max(times))) != plan:
            assert cleared is not None
            participant.save_plan(cleared)

    def with_restore_options(self, config: CharmConfig, turn: RestoreTurn) -> CharmConfig:
        """The config for this hook's start, with MaxTruncation raised if it needs that.

        The first start on restored data truncates the log to the chaser checkpoint; when
        the writer is further ahead than MaxTruncation, KurrentDB would refuse to start.
        """
        if turn.max_truncation is None:
            return config
        extra = {**config.extra_options, "MaxTruncation": turn.max_truncation}
        return dataclasses.replace(config, extra_options=extra)

    def after_configure(self, node_running: bool) -> None:
        """Report a node started on restored data (the reconcile just started it)."""
        if self._participant is not None:
            self._participant.after_configure(node_running)

    def statuses(self) -> list[ops.StatusBase]:
        """This unit's restore status, if a restore concerns it."""
        if self.problem is not None:
            return [self.problem]
        participant = self._restore_participant()
        plan = participant.plan() if participant is not None else None
        if plan is None or not plan.running:
            return []
        return [
            ops.MaintenanceStatus(
                f"restoring backup {plan.backup_id}: {plan.phase.value}"
                + (f" ({plan.reason})" if plan.reason else "")
            )
        ]

    def app_note(self) -> str | None:
        """What the application status should add after a restore, if anything."""
        participant = self._restore_participant()
        plan = participant.plan() if participant is not None else None
        if plan is None or plan.running:
            return None
        from backup.restore import Outcome

        if plan.outcome is Outcome.FAILED:
            return f"restore of {plan.backup_id} failed ({plan.reason}): previous data kept"
        if plan.fresh_backup_needed:
            return f"restored from {plan.backup_id}: run create-backup for a fresh backup"
        return None

    def _volume(self) -> Path | None:
        storages = self._charm.model.storages.get("data")
        return Path(storages[0].location) if storages else None

    def _restore_participant(self) -> RestoreParticipant | None:
        """The restore participant, or None when no restore shows anywhere near this unit.

        Then the restore modules are not even imported.
        """
        if self._participant is not None:
            return self._participant
        relation, volume = self._state.peer_relation, self._volume()
        if relation is None or volume is None:
            return None
        shows = (
            RESTORE_KEY in relation.data[relation.app]
            or RESTORE_KEY in relation.data[self._charm.unit]
            or (volume / RESTORE_MARKER).exists()
        )
        if not shows:
            return None
        return self._make_participant()

    def _make_participant(self) -> RestoreParticipant:
        from backup.participant import RestoreParticipant

        if self._participant is None:
            self._participant = RestoreParticipant(
                self._charm.model,
                lambda: self._state.peer_relation,
                self._volume,
                lambda: self.storage.store(),
                self._stop_node,
                self._workload_ids,
            )
        return self._participant

    # --- restore ------------------------------------------------------------------------

    def _on_restore(self, event: ops.ActionEvent) -> None:
        from backup import engine
        from backup.manifest import ManifestError
        from backup.restore import BackupFacts, Refusal, initiate
        from backup.settings import StorageNotReady
        from backup.store import StorageError

        if not self._charm.unit.is_leader():
            event.fail("run restore on the leader: juju run kurrentdb/leader restore backup-id=...")
            return
        if self._refused_for(event):
            return
        backup_id = str(event.params.get("backup-id", ""))
        relation = self._state.peer_relation
        if relation is None:
            event.fail("the peer relation is not there yet; try again shortly")
            return
        try:
            store = self.storage.store()
            manifest = engine.load_manifest(store, backup_id)
            running = engine.running_backups(store, self._charm.app.name, self._charm.model.uuid)
        except StorageNotReady as not_ready:
            event.fail(str(not_ready))
            return
        except StorageError as e:
            event.fail(f"the object storage failed ({e.code}); nothing was changed")
            return
        except engine.BackupNotFoundError:
            event.fail(f"no complete backup {backup_id!r} here: list-backups shows what there is")
            return
        except ManifestError as e:
            event.fail(f"backup {backup_id} has an unusable manifest ({e}); restore another")
            return
        participant = self._make_participant()
        plan = initiate(
            BackupFacts.from_manifest(manifest),
            members=self._state.cluster_plan().members,
            present=tuple(self._state.unit_reports()),
            image_version=self._image_version(),
            running_restore=participant.plan(),
            running_backup=running[0].unit if running else None,
            now=time.time(),
            token=secrets.token_hex(4),
            reports=participant.reports(),
        )
        if isinstance(plan, Refusal):
            event.fail(plan.message)
            return
        participant.save_plan(plan)
        event.log(
            f"restore {plan.restore_id} of backup {backup_id} initiated on "
            f"{', '.join(plan.participants)}: every unit downloads and verifies it first"
        )
        # This unit's own part starts now: its download, with progress in this action.
        self.take_turn(event.log)
        event.set_results(
            {
                "restore-id": plan.restore_id,
                "backup-id": backup_id,
                "units": ", ".join(plan.participants),
                "next": "watch juju status: the units report each step; the old data is "
                "kept until the restored cluster serves",
            }
        )

    # --- create-backup ------------------------------------------------------------------

    def _on_create_backup(self, event: ops.ActionEvent) -> None:
        from backup import engine, layout
        from backup.settings import StorageNotReady
        from backup.store import StorageError

        force = event.params.get("force") is True
        if self._refused_for(event):
            return
        participant = self._restore_participant()
        restoring = participant.plan() if participant is not None else None
        if restoring is not None and restoring.running:
            event.fail(f"restore {restoring.restore_id} is running; back up once it is done")
            return
        try:
            store = self.storage.store()
            data_dir = self._data_dir()
            info = self._source_info(force)
        except (StorageNotReady, BackupRefusedError) as refused:
            event.fail(str(refused))
            return
        started = time.time()
        try:
            with self._scavenge_paused(event.log):
                result = engine.create_backup(store, data_dir, info, event.log)
        except StorageError as e:
            event.fail(
                f"the object storage failed the backup ({e.code}); no backup was recorded "
                "and the node kept serving; run create-backup again"
            )
            return
        except engine.PathOwnedError as e:
            event.fail(str(e))
            return
        except layout.BackupSourceError as e:
            event.fail(f"the data directory cannot be backed up: {e}")
            return
        except BackupRefusedError as refused:
            event.fail(str(refused))
            return
        self._note_backup_taken(started)
        event.set_results(
            {
                "backup-id": result.backup_id,
                "files": result.files,
                "bytes-total": result.bytes_total,
                "bytes-uploaded": result.bytes_uploaded,
                "seconds": round(result.seconds, 1),
                "downtime-seconds": 0,  # online: the node serves throughout
            }
        )

    def _data_dir(self) -> Path:
        storages = self._charm.model.storages.get("data")
        if not storages:
            raise BackupRefusedError("the data volume is not attached to this unit yet")
        # The charm container sees the workload's volume at the storage's location.
        return Path(storages[0].location)

    def _source_info(self, force: bool) -> SourceInfo:
        from backup.manifest import SourceInfo

        health = self._health()
        if health.info is None:
            raise BackupRefusedError(
                f"this unit's KurrentDB does not answer ({health.problem or 'not running'}); "
                "run create-backup on a unit whose node serves"
            )
        role = health.info.state
        followers = self._caught_up_followers()
        if role == "Leader" and followers and not force:
            raise BackupRefusedError(
                "this node is the KurrentDB leader: back up a follower instead "
                f"({', '.join(followers)}), or run with force=true"
            )
        if role not in ("Leader", "Follower", "ReadOnlyReplica"):
            raise BackupRefusedError(
                f"this node is {role}, not serving: run create-backup on "
                f"{', '.join(followers) or 'a unit whose node serves'}"
            )
        if role != "Leader" and not health.caught_up and not force:
            raise BackupRefusedError(
                "this node is behind the leader: run create-backup on a caught-up follower "
                f"({', '.join(followers) or 'none now'}), or run with force=true"
            )
        model = self._charm.model
        return SourceInfo(
            kurrentdb_version=health.info.db_version,
            cluster=self._charm.app.name,
            application=self._charm.app.name,
            unit=self._charm.unit.name,
            model=model.name,
            model_uuid=model.uuid,
            charm_revision=0,  # Juju does not tell a charm its own revision
        )

    def _caught_up_followers(self) -> list[str]:
        reports = self._state.unit_reports()
        me = self._charm.unit.name
        return [
            u for u, r in sorted(reports.items()) if u != me and r.serving and r.role != "Leader"
        ]

    @contextlib.contextmanager
    def _scavenge_paused(self, log: Callable[[str], None]) -> Iterator[None]:
        """No scavenge runs on this node while the body runs; auto-scavenge resumes after."""
        from kurrentdb_api import KurrentDBError

        client = self._admin_client()
        paused_here = False
        try:
            if client.auto_scavenge_enabled():
                if client.auto_scavenge_status().state not in ("Paused", "Pausing"):
                    paused_here = True
                    log("pausing auto-scavenge for the backup")
                    client.pause_auto_scavenge()
                self._wait_auto_scavenge_paused(client)
            stopped = client.stop_scavenge()
            if stopped is not None:
                log(f"stopped scavenge {stopped} on this node for the backup")
        except KurrentDBError as e:
            with contextlib.suppress(KurrentDBError):
                if paused_here:
                    client.resume_auto_scavenge()
            raise BackupRefusedError(
                f"cannot make sure no scavenge runs ({e}); a backup during a scavenge is not "
                "consistent: run create-backup again"
            ) from None
        try:
            yield
        finally:
            if paused_here:
                try:
                    client.resume_auto_scavenge()
                    log("auto-scavenge resumed")
                except KurrentDBError as e:
                    logger.warning("Resuming auto-scavenge failed: %s", e)
                    log("could not resume auto-scavenge: POST /auto-scavenge/resume by hand")

    @staticmethod
    def _wait_auto_scavenge_paused(client: KurrentDBClient) -> None:
        deadline = time.monotonic() + SCAVENGE_PAUSE_TIMEOUT
        while client.auto_scavenge_status().state != "Paused":
            if time.monotonic() >= deadline:
                raise BackupRefusedError(
                    "auto-scavenge did not pause within a minute (a scavenge is stopping); "
                    "run create-backup again shortly"
                )
            time.sleep(SCAVENGE_POLL_SECONDS)

    # --- list-backups -------------------------------------------------------------------

    def _on_list_backups(self, event: ops.ActionEvent) -> None:
        from backup import engine
        from backup.settings import StorageNotReady
        from backup.store import StorageError

        output = event.params.get("format", "table")
        if output not in LIST_FORMATS:
            event.fail(f"format must be one of {', '.join(LIST_FORMATS)}")
            return
        try:
            backups = engine.list_backups(self.storage.store())
        except StorageNotReady as not_ready:
            event.fail(str(not_ready))
            return
        except StorageError as e:
            event.fail(f"the object storage failed the listing ({e.code})")
            return
        if output == "json":
            rows = [_row(b) for b in backups]
            event.set_results({"backups": json.dumps(rows, sort_keys=True)})
        else:
            event.set_results({"backups": _table(backups)})


def _row(summary: BackupSummary) -> dict[str, object]:
    row = {name: getattr(summary, field) for name, field in _TABLE_COLUMNS}
    row["started"] = summary.started_at
    if summary.reason:
        row["reason"] = summary.reason
    return {k: v for k, v in row.items() if v is not None}


def _table(backups: list[BackupSummary]) -> str:
    from text_table import text_table

    rows = [
        [
            "-" if getattr(summary, f) is None else str(getattr(summary, f))
            for _, f in _TABLE_COLUMNS
        ]
        for summary in backups
    ]
    return text_table([name for name, _ in _TABLE_COLUMNS], rows)
