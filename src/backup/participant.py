"""This unit's part in a restore: read the plan, do the step `restore.unit_step` names, report.

`restore.py` decides; this module carries the decision out on this unit's volume (the
charm container sees the data volume at the storage location: `swap.py` works there) and
on its KurrentDB service, and publishes the outcome in the peer unit databag. The charm
calls `take_turn` early in every reconcile, before anything may start KurrentDB, and
honours the step it returns: `holds_node_stopped` (never start or restart the node),
`pauses_schedule` (no rolling restart, resize or backup); then `after_configure`, which
reports a node started on restored data.

A step that fails publishes an error code (a storage error code or one of the charm's
own), never an exception's text: relation data is readable by every unit and by anyone
who can `juju show-unit`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from backup import swap
from backup.restore import (
    Action,
    RestorePlan,
    Step,
    UnitRestoreReport,
    advance,
    unit_step,
)
from databag import update_databag

if TYPE_CHECKING:
    import ops

    from backup.store import ObjectStore

logger = logging.getLogger(__name__)

NO_STEP = Step(Action.NOTHING)


class RestoreParticipant:
    """Carries out this unit's restore steps; the Juju leader also advances the plan."""

    def __init__(
        self,
        model: ops.Model,
        relation: Callable[[], ops.Relation | None],
        volume: Callable[[], Path | None],
        store: Callable[[], ObjectStore],
        stop_node: Callable[[], None],
        workload_ids: Callable[[], tuple[int, int]],
    ):
        self._model = model
        self._relation = relation
        self._volume = volume
        self._store = store
        self._stop_node = stop_node
        self._workload_ids = workload_ids
        self.step = NO_STEP

    # --- what the databags say ------------------------------------------------------------

    def plan(self) -> RestorePlan | None:
        """The leader's restore plan (None: none, or unusable)."""
        relation = self._relation()
        return None if relation is None else RestorePlan.from_databag(relation.data[relation.app])

    def reports(self) -> dict[str, UnitRestoreReport | None]:
        """Every present unit's restore report, this unit's included."""
        relation = self._relation()
        if relation is None:
            return {}
        units = [self._model.unit, *relation.units]
        return {u.name: UnitRestoreReport.from_databag(relation.data[u]) for u in units}

    def save_plan(self, plan: RestorePlan) -> None:
        """Leader: publish the plan (only when it changed)."""
        relation = self._relation()
        if relation is not None:
            update_databag(relation.data[relation.app], plan.to_databag())

    def _publish(self, report: UnitRestoreReport | None) -> None:
        relation = self._relation()
        if report is not None and relation is not None:
            update_databag(relation.data[self._model.unit], report.to_databag())

    # --- every hook ------------------------------------------------------------------------

    def take_turn(
        self,
        serving: Mapping[str, bool],
        is_leader: bool,
        progress: Callable[[str], None] | None = None,
    ) -> Step:
        """Recover the volume, advance the plan (leader), do this unit's step; return it."""
        relation, volume = self._relation(), self._volume()
        if relation is None or volume is None:
            self.step = NO_STEP
            return self.step
        marker = self._recover(volume)
        plan = self.plan()
        reports = self.reports()
        if is_leader and plan is not None:
            advanced = advance(plan, reports, serving, time.time())
            if advanced is not None and advanced != plan:
                logger.info("Restore %s: %s", advanced.restore_id, advanced.phase.value)
                self.save_plan(advanced)
                plan = advanced
        me = self._model.unit.name
        peers = {u: r for u, r in reports.items() if u != me}
        step = unit_step(plan, me, reports.get(me), marker, peers)
        self.step = step
        if step.action is not Action.NOTHING:
            self._do(step, plan, volume, progress or logger.info)
        return step

    def after_configure(self, node_running: bool) -> None:
        """Report a node started on the restored data, once the reconcile started it."""
        if self.step.action is Action.START and node_running:
            self._publish(self.step.succeeded())

    # --- the steps ------------------------------------------------------------------------

    def _recover(self, volume: Path) -> swap.Recovery | None:
        if not (volume / swap.RESTORE_DIR / swap.MARKER_NAME).exists():
            return None
        try:
            recovered = swap.recover(volume)
        except swap.SwapError as e:
            logger.error("The restore marker on the volume cannot be used: %s", e)
            raise
        if recovered is not None and recovered.finished:
            logger.info("Restore %s: finished an interrupted %s", recovered.restore_id,
                        recovered.finished)  # fmt: skip
        return recovered

    def _do(
        self, step: Step, plan: RestorePlan | None, volume: Path, progress: Callable[[str], None]
    ) -> None:
        from backup.settings import StorageNotReady
        from backup.store import StorageError

        rid = step.restore_id
        try:
            if step.action is Action.STAGE:
                assert plan is not None and rid is not None
                self._stage(plan, volume, progress)
                self._publish(step.succeeded())
            elif step.action is Action.SWAP:
                assert rid is not None
                self._stop_node()
                uid, gid = self._workload_ids()
                self._publish(step.succeeded(swap.swap_in(volume, rid, uid, gid)))
            elif step.action is Action.COMMIT:
                assert rid is not None
                swap.commit(volume, rid)
                self._publish(step.succeeded())
            elif step.action is Action.ABORT:
                assert rid is not None
                swap.discard_staging(volume, rid)
                self._publish(step.succeeded())
            elif step.action is Action.ROLL_BACK:
                assert rid is not None
                self._stop_node()
                swap.roll_back(volume, rid)
                swap.discard_staging(volume, rid)
                self._publish(step.succeeded())
            elif step.action is Action.REPORT_ONLY:
                self._publish(step.succeeded())
            # START: the reconcile starts the node; `after_configure` reports it.
        except StorageError as e:
            logger.error("Restore %s: %s failed: storage error %s", rid, step.action.value, e.code)
            self._publish(step.failed(e.code))
        except StorageNotReady as e:
            logger.error("Restore %s: no usable object storage here: %s", rid, e)
            self._publish(step.failed("storage-not-ready"))
        except swap.NotEnoughSpace as e:
            logger.error("Restore %s: %s", rid, e)
            self._publish(step.failed("not-enough-space"))
        except swap.SwapError as e:
            logger.error("Restore %s: %s failed: %s", rid, step.action.value, e)
            self._publish(step.failed("volume-error"))
        except _verification_errors() as e:
            logger.error("Restore %s: the backup does not verify: %s", rid, e)
            self._publish(step.failed("verification-failed"))
        except OSError as e:
            logger.error("Restore %s: %s failed: %s", rid, step.action.value, e.strerror)
            self._publish(step.failed(f"os-error:{e.errno}" if e.errno else "os-error"))

    def _stage(self, plan: RestorePlan, volume: Path, progress: Callable[[str], None]) -> None:
        from backup import engine

        store = self._store()
        manifest = engine.load_manifest(store, plan.backup_id)
        staged = swap.prepare_staging(volume, plan.restore_id, manifest.bytes_total)
        engine.download_and_verify(store, manifest, staged, progress)
        swap.mark_staged(volume, plan.restore_id)


def _verification_errors() -> tuple[type[Exception], ...]:
    from backup.engine import BackupNotFoundError, VerificationError
    from backup.manifest import ManifestError

    return (VerificationError, BackupNotFoundError, ManifestError)
