"""The refresh capability: `juju refresh` one unit at a time, highest first, leader last.

What it owns:
- this unit's refresh keys in its peer databag: the controller revision of its pod
  (`refresh-revision`, learnt once per pod from Kubernetes and kept in stored state, which
  lives exactly as long as the pod), the KurrentDB its image holds (`refresh-version`) and
  the checks `force-refresh-start` skipped for it (`refresh-forced`) and the revision on
  which the first unit's own pre-refresh checks passed (`refresh-checked`);
- the leader's record (`plan.RefreshRecord`, app key `refresh`), its resign request
  (`refresh-resign`) and the StatefulSet's partition;
- the actions `pre-refresh-check`, `resume-refresh`, `force-refresh-start`, and the
  `pause-after-unit-refresh` option;
- whether KurrentDB may start on this unit (`workload_allowed_to_start`): on a refreshed
  unit, three checks, each skipped by its `force-refresh-start` parameter for the revision
  the unit runs: the image (`check-workload-container`), the version change
  (`check-compatibility`) and, on the first unit only, the cluster's health without it
  (`run-pre-refresh-checks`, as charm-refresh runs them after the first pod is replaced);
- what else must wait while a refresh runs (`refusal`).

Nothing here costs a Kubernetes call in a hook outside a refresh, except the first hook of
each pod (its revision). See `plan` for the decisions and `statefulset` for the calls.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import ops

from cluster import LEADING_ROLES, unit_number

if TYPE_CHECKING:
    from image import Image
    from refresh.plan import Progress, RefreshRecord, UnitFacts
    from state import CharmState
    from workload.render import NodeIdentity

logger = logging.getLogger(__name__)

PAUSE_OPTION = "pause-after-unit-refresh"
REVISION_KEY = "refresh-revision"
VERSION_KEY = "refresh-version"
FORCED_KEY = "refresh-forced"
CHECKED_KEY = "refresh-checked"
# force-refresh-start's parameters, in the order a refreshed unit's checks run.
WORKLOAD_CHECK = "check-workload-container"
COMPATIBILITY_CHECK = "check-compatibility"
CLUSTER_CHECK = "run-pre-refresh-checks"
START_CHECKS = (WORKLOAD_CHECK, COMPATIBILITY_CHECK, CLUSTER_CHECK)
RESIGN_KEY = "refresh-resign"
RECORD_KEY = "refresh"
IMAGE_RESOURCE = "kurrentdb-image"
# A pod whose revision could not be read asks again after this long, not every hook.
REVISION_RETRY_SECONDS = 600.0
RESIGN_TIMEOUT = 30.0
_CHARM_URL = re.compile(r"-(\d+)$")


class Refresh(ops.Object):
    """`juju refresh` for KurrentDB, driven by the leader through the StatefulSet partition."""

    def __init__(
        self,
        charm: ops.CharmBase,
        state: CharmState,
        stored: ops.framework.BoundStoredState,
        identity: NodeIdentity,
        image: Image,
        hand_over_leadership: Callable[[float], bool],
        leads: Callable[[], bool],
    ):
        super().__init__(charm, "refresh")
        self._charm = charm
        self._state = state
        self._stored = stored
        self._stored.set_default(refresh_pod_revision="", refresh_revision_asked=0.0)
        self._identity = identity
        self._image_version = image.version
        self._image_unknown = image.unknown_to_charm
        self._hand_over_leadership = hand_over_leadership
        self._leads = leads
        self.problem: ops.StatusBase | None = None  # this hook's own failure, if any
        self._progress: Progress | None = None
        for action, handler in (
            ("pre_refresh_check", self._on_pre_refresh_check),
            ("resume_refresh", self._on_resume_refresh),
            ("force_refresh_start", self._on_force_refresh_start),
        ):
            charm.framework.observe(getattr(charm.on, f"{action}_action"), handler)

    # --- peer data ------------------------------------------------------------------------

    @property
    def _relation(self) -> ops.Relation | None:
        return self._state.peer_relation

    def _record(self) -> RefreshRecord:
        from refresh.plan import RefreshRecord

        relation = self._relation
        text = relation.data[relation.app].get(RECORD_KEY) if relation else None
        return RefreshRecord.from_json(text)

    def _save_record(self, record: RefreshRecord) -> None:
        relation = self._relation
        if relation is not None and self._charm.unit.is_leader():
            text = record.to_json()
            if relation.data[relation.app].get(RECORD_KEY) != text:
                relation.data[relation.app][RECORD_KEY] = text

    def _facts(self) -> dict[str, UnitFacts]:
        from refresh.plan import UnitFacts

        relation = self._relation
        if relation is None:
            return {}
        reports = self._state.unit_reports()
        facts = {}
        for unit in (self._charm.unit, *relation.units):
            data = relation.data[unit]
            report = reports.get(unit.name)
            facts[unit.name] = UnitFacts(
                revision=_bounded(data.get(REVISION_KEY)),
                version=_bounded(data.get(VERSION_KEY)),
                serving=bool(report and report.serving),
                leading=bool(report and report.role in LEADING_ROLES),
                role=report.role if report else None,
            )
        return facts

    def in_progress(self) -> bool:
        """Whether a refresh may be under way (peer data only: no Kubernetes call)."""
        from refresh.plan import maybe_in_progress

        relation = self._relation
        if relation is None or RECORD_KEY not in relation.data[relation.app]:
            # No record yet: only differing revisions tell.
            revisions = {f.revision for f in self._facts().values()}
            return len(revisions) > 1
        return maybe_in_progress(self._record(), self._facts())

    def refusal(self) -> str | None:
        """Why risky work (backups, restores, rotations, restarts) must wait, or None."""
        if self.in_progress():
            return "a refresh is under way; try again once `juju status` shows it done"
        return None

    # --- every hook -----------------------------------------------------------------------

    def publish(self) -> None:
        """Every unit, every hook: which revision and KurrentDB version this pod runs."""
        relation = self._relation
        if relation is None:
            return
        data = relation.data[self._charm.unit]
        revision = self._pod_revision()
        if revision and data.get(REVISION_KEY) not in (None, revision):
            # A new pod: what the old one said of its node is no longer true, and the
            # leader must not read it as this node serving on the new revision.
            report = self._state.own_report()
            self._state.save_own_report(dataclasses.replace(report, role=None, caught_up=False))
        version = self._image_version() or ""
        for key, value in ((REVISION_KEY, revision), (VERSION_KEY, version)):
            if value and data.get(key) != value:
                data[key] = value

    def _pod_revision(self) -> str:
        """This pod's controller revision: asked once per pod, kept in stored state."""
        known = str(self._stored.refresh_pod_revision)
        if known:
            return known
        now = time.time()
        if now - float(self._stored.refresh_revision_asked) < REVISION_RETRY_SECONDS:
            return ""
        self._stored.refresh_revision_asked = now
        from refresh import statefulset

        answer = statefulset.pod_revision(self._identity.pod_name, self._identity.namespace)
        if isinstance(answer, str):
            self._stored.refresh_pod_revision = answer
            self._hold_partition_if_refreshing(answer, first_hook=True)
            return answer
        return ""

    def _hold_partition_if_refreshing(self, own_revision: str, *, first_hook: bool) -> None:
        """A pod's first hook, or its stop: hold back the units below this one in a refresh.

        A unit merely restarting during a refresh must not let them go. A new pod looks
        only when other units run another revision; a pod that stops always looks, since
        nobody can know yet that the refresh replacing it began.
        """
        facts = self._facts()
        others = {f.revision for name, f in facts.items() if name != self._charm.unit.name}
        if first_hook and not others - {own_revision, None}:
            return
        from refresh import statefulset

        app, namespace = self._charm.app.name, self._identity.namespace
        view = statefulset.read(app, namespace)
        if isinstance(view, statefulset.KubernetesUnavailable):
            return
        refreshing = view.update_revision != own_revision or bool(
            others - {view.update_revision, None}
        )
        own = unit_number(self._charm.unit.name)
        if refreshing and view.partition < own:
            statefulset.set_partition(app, namespace, own)

    def on_stop(self) -> None:
        """This pod is going (a refresh replacing it, a deletion, a drain)."""
        revision = str(self._stored.refresh_pod_revision)
        if revision and self._relation is not None and self._relation.units:
            self._hold_partition_if_refreshing(revision, first_hook=False)

    def take_turn(self) -> None:
        """Every unit: resign when the leader asks (this unit's pod goes next)."""
        relation = self._relation
        if relation is None:
            return
        if relation.data[relation.app].get(RESIGN_KEY) != self._charm.unit.name:
            return
        if self._leads():
            logger.info("Resigning KurrentDB leadership: this unit's pod is refreshed next")
            self._hand_over_leadership(RESIGN_TIMEOUT)

    def coordinate(self, busy: str | None) -> None:
        """Leader: record what runs, or move the partition one unit on (`plan.assess`)."""
        from refresh import plan, statefulset

        relation = self._relation
        if relation is None or not self._charm.unit.is_leader():
            return
        record, facts = self._record(), self._facts()
        if not plan.maybe_in_progress(record, facts):
            self._record_steady(record, facts)
            self._request_resign(self._first_if_leading(facts) if record.prepared else None)
            return
        app, namespace = self._charm.app.name, self._identity.namespace
        view = statefulset.read(app, namespace)
        if isinstance(view, statefulset.KubernetesUnavailable):
            self.problem = _unavailable_status(view, "a refresh cannot be steered")
            return
        progress = plan.assess(record, view, facts, self._pause(), busy)
        self._progress = progress
        if not progress.in_progress:
            self._record_steady(record, facts)
            self._request_resign(None)
            if view.partition != 0:
                statefulset.set_partition(app, namespace, 0)
            return
        self._save_record(progress.record)
        first = self._first_if_leading(facts) if not progress.refreshed else None
        self._request_resign(progress.resign or first)
        if progress.partition != view.partition:
            failed = statefulset.set_partition(app, namespace, progress.partition)
            if failed is not None:
                self.problem = _unavailable_status(failed, "the refresh cannot move on")

    def _record_steady(self, record: RefreshRecord, facts: dict[str, UnitFacts]) -> None:
        from refresh.plan import steady_record

        known = record.original
        charm, image = (known.charm, known.image) if known is not None else ("", "")
        candidate = steady_record(record, facts, charm, image)
        if candidate == record or candidate.original is None:
            return
        # Only now the rollback command's parts, which cost a hook tool call and a read.
        self._save_record(steady_record(record, facts, self._charm_revision(), self._image()))

    @staticmethod
    def _first_if_leading(facts: dict[str, UnitFacts]) -> str | None:
        """The first unit to refresh, when its node leads (else None).

        It should hand leadership over before Kubernetes replaces its pod: its stop hook
        would too, with less time.
        """
        from refresh.plan import highest_first

        first = highest_first(facts)[0] if facts else None
        return first if first is not None and facts[first].leading else None

    def _request_resign(self, unit: str | None) -> None:
        relation = self._relation
        if relation is None:
            return
        value = unit or ""
        if relation.data[relation.app].get(RESIGN_KEY, "") != value:
            relation.data[relation.app][RESIGN_KEY] = value

    def _pause(self) -> str:
        value = self._charm.config.get(PAUSE_OPTION, "first")
        return value if isinstance(value, str) else ""

    # --- may KurrentDB start here? ---------------------------------------------------------

    def workload_allowed_to_start(self) -> bool:
        """False on a refreshed unit one of whose start checks fails and was not skipped."""
        return self.start_refusal() is None

    def start_refusal(self) -> tuple[str, str] | None:
        """(check, reason): the first start check this refreshed unit fails, or None."""
        record = self._record()
        original = record.original
        revision = str(self._stored.refresh_pod_revision)
        if original is None or not revision or revision == original.revision:
            return None  # not refreshed (or a rollback to what ran before)
        skipped = self._skipped(revision)
        relation = self._relation
        for check in START_CHECKS:
            if check in skipped:
                continue
            if check == WORKLOAD_CHECK:
                reason = self._image_unknown()
            elif check == COMPATIBILITY_CHECK:
                reason = self._compatibility_refusal(record)
            else:
                reason = self._cluster_check_failure(record, revision)
            if reason is not None:
                return check, reason
        if (
            relation is not None
            and CLUSTER_CHECK not in skipped
            and self._is_first_unit(record)
            and relation.data[self._charm.unit].get(CHECKED_KEY) != revision
        ):
            relation.data[self._charm.unit][CHECKED_KEY] = revision  # passed: not again
        return None

    def _compatibility_refusal(self, record: RefreshRecord) -> str | None:
        from refresh.versions import check_change

        original = record.original
        assert original is not None
        running, target = original.kurrentdb or None, self._image_version()
        refusal = check_change(running, target, record.data_version)
        return refusal.reason if refusal is not None else None

    def _is_first_unit(self, record: RefreshRecord) -> bool:
        """Whether this unit is the one the refresh replaced first (the record says)."""
        return record.first == self._charm.unit.name

    def _cluster_check_failure(self, record: RefreshRecord, revision: str) -> str | None:
        """On the first unit only, until they pass once: the rest of the cluster must be whole.

        Its own node is down (Kubernetes replaced the pod); the others must serve with one
        leader, and nothing else that stops nodes may run, before its new KurrentDB joins.
        """
        from refresh import checks

        relation = self._relation
        if relation is None or not self._is_first_unit(record):
            return None
        if relation.data[self._charm.unit].get(CHECKED_KEY) == revision:
            return None
        failure = checks.pre_refresh_failure(
            self._state,
            self._facts(),
            None,
            self._charm.app.planned_units(),
            offline=self._charm.unit.name,
        )
        if failure is None and self._busy is not None:
            failure = self._busy()
        return failure

    def _skipped(self, revision: str) -> set[str]:
        """The checks `force-refresh-start` skipped for this revision, on any unit.

        Forcing is one decision for the whole refresh: the units after the first inherit it.
        """
        relation = self._relation
        if relation is None:
            return set()
        skipped: set[str] = set()
        for unit in (self._charm.unit, *relation.units):
            try:
                forced = json.loads(relation.data[unit].get(FORCED_KEY) or "{}")
            except ValueError:
                continue
            if not isinstance(forced, dict) or forced.get("revision") != revision:
                continue
            names = forced.get("skipped")
            if isinstance(names, list):
                skipped.update(n for n in names if n in START_CHECKS)
        return skipped

    # --- statuses -------------------------------------------------------------------------

    def unit_statuses(self) -> list[ops.StatusBase]:
        """This unit's refresh status: a refused version, or this hook's failure."""
        from refresh.plan import PAUSE_VALUES

        statuses = [self.problem] if self.problem is not None else []
        if (pause := self._pause()) not in PAUSE_VALUES:
            statuses.append(
                ops.BlockedStatus(
                    f"{PAUSE_OPTION} must be all, first or none; {pause!r} counts as all"
                )
            )
        if (refused := self.start_refusal()) is not None:
            check, reason = refused
            what = "pre-refresh check failed" if check == CLUSTER_CHECK else "refresh refused"
            statuses.append(
                ops.BlockedStatus(
                    f"{what}: {reason}; roll back ({self.rollback_command()}) or juju run "
                    f"{self._charm.unit.name} force-refresh-start {check}=false"
                )
            )
        return statuses

    def app_status(self) -> ops.StatusBase | None:
        """The leader's refresh status, while a refresh runs (it outranks the cluster's)."""
        if not self._charm.unit.is_leader() or not self.in_progress():
            return None
        progress = self._progress or self._assess_now()
        if progress is None or not progress.in_progress:
            if self.problem is not None:
                return self.problem
            return ops.MaintenanceStatus("refreshing: waiting for the refreshed units to report")
        done, total = len(progress.refreshed), len(progress.refreshed) + len(progress.pending)
        what = "rolling back" if progress.rollback else "refreshing"
        head = f"{what}: {done}/{total} units done"
        if progress.paused:
            last = progress.refreshed[-1]
            return ops.BlockedStatus(
                f"{head}; check {last} serves, then juju run {self._charm.app.name}/leader "
                f"resume-refresh; to roll back: {self.rollback_command()}"
            )
        waiting = f"; next {progress.next_unit}: {progress.waiting}" if progress.waiting else ""
        return ops.MaintenanceStatus(f"{head}{waiting}; to roll back: {self.rollback_command()}")

    def _assess_now(self) -> Progress | None:
        """Where the refresh stands, for a hook that did not coordinate (an action)."""
        from refresh import plan, statefulset

        view = statefulset.read(self._charm.app.name, self._identity.namespace)
        if isinstance(view, statefulset.KubernetesUnavailable):
            return None
        return plan.assess(self._record(), view, self._facts(), self._pause())

    def rollback_command(self) -> str:
        """The `juju refresh` that returns to what ran before the refresh."""
        original = self._record().original
        revision = original.charm if original and original.charm else "<previous revision>"
        command = f"juju refresh {self._charm.app.name} --revision {revision}"
        if original is not None and original.image:
            command += f" --resource {IMAGE_RESOURCE}={original.image}"
        return command

    # --- actions --------------------------------------------------------------------------

    def _on_pre_refresh_check(self, event: ops.ActionEvent) -> None:
        from refresh import checks, statefulset

        if not self._charm.unit.is_leader():
            event.fail("run it on the leader: juju run kurrentdb/leader pre-refresh-check")
            return
        failure = checks.pre_refresh_failure(
            self._state, self._facts(), self.refusal(), self._charm.app.planned_units()
        )
        if failure is None and self._busy is not None:
            failure = self._busy()
        if failure is not None:
            event.fail(f"pre-refresh check failed: {failure}")
            return
        facts = self._facts()
        # Only the highest unit may go when `juju refresh` runs: the rest wait for the leader.
        highest = max(unit_number(u) for u in facts)
        app, namespace = self._charm.app.name, self._identity.namespace
        failed = statefulset.set_partition(app, namespace, highest)
        if failed is not None:
            event.fail(f"pre-refresh check failed: {_unavailable_message(failed)}")
            return
        from refresh.plan import steady_record

        prepared = dataclasses.replace(self._record(), prepared=True)
        self._save_record(steady_record(prepared, facts, self._charm_revision(), self._image()))
        first = self._first_if_leading(facts)
        self._request_resign(first)
        leaders = [u for u, f in facts.items() if f.leading]
        results = {
            "result": "the cluster can be refreshed: every node serves, one leads",
            "first-unit": f"{app}/{highest}",
            "leader": ", ".join(leaders),
            "rollback": self.rollback_command(),
        }
        if first is not None:
            results["leadership"] = f"{first} leads and refreshes first: it hands over now"
        event.set_results(results)

    _busy: Callable[[], str | None] | None = None

    def check_also(self, busy: Callable[[], str | None]) -> None:
        """Another capability's reason to refuse a refresh now (a backup, a restore)."""
        self._busy = busy

    def _on_resume_refresh(self, event: ops.ActionEvent) -> None:
        from refresh import plan, statefulset

        if not self._charm.unit.is_leader():
            event.fail("run it on the leader: juju run kurrentdb/leader resume-refresh")
            return
        check_health = event.params.get("check-health-of-refreshed-units", True) is not False
        record, facts = self._record(), self._facts()
        if not plan.maybe_in_progress(record, facts):
            event.fail("no refresh is under way")
            return
        view = statefulset.read(self._charm.app.name, self._identity.namespace)
        if isinstance(view, statefulset.KubernetesUnavailable):
            event.fail(_unavailable_message(view))
            return
        progress = plan.assess(record, view, facts, self._pause())
        if not progress.in_progress or not progress.refreshed:
            event.fail("no unit has been refreshed yet: nothing to resume")
            return
        unhealthy = [u for u in progress.refreshed if not facts[u].serving]
        if unhealthy and check_health:
            event.fail(
                f"{', '.join(unhealthy)} does not serve since its refresh; roll back "
                f"({self.rollback_command()}) or resume with check-health-of-refreshed-units=false"
            )
            return
        self._save_record(plan.resumed(record, progress, check_health=check_health))
        event.set_results({"result": f"the refresh goes on after {progress.refreshed[-1]}"})

    def _on_force_refresh_start(self, event: ops.ActionEvent) -> None:
        params = {name: event.params.get(name, True) is not False for name in START_CHECKS}
        if all(params.values()):
            event.fail("set at least one of the checks to false: that is what gets skipped")
            return
        revision = str(self._stored.refresh_pod_revision)
        original = self._record().original
        if not revision or original is None or revision == original.revision:
            event.fail("this unit is not refreshed: run it on the first unit the refresh replaced")
            return
        relation = self._relation
        if relation is None:
            event.fail("the peer relation is not there yet")
            return
        refused = self.start_refusal()
        if refused is None:
            event.fail("nothing to force: every check passes and this unit's KurrentDB may start")
            return
        skipped = sorted(self._skipped(revision) | {n for n, check in params.items() if not check})
        relation.data[self._charm.unit][FORCED_KEY] = json.dumps(
            {"revision": revision, "skipped": skipped}
        )
        results = {"result": f"skipping {', '.join(skipped)} for this refresh"}
        if (still := self.start_refusal()) is not None:
            check, reason = still
            results["still-refused"] = f"{reason} (skip it with {check}=false)"
        event.set_results(results)

    # --- helpers --------------------------------------------------------------------------

    def _charm_revision(self) -> str:
        """This charm's revision, from the charm URL Juju writes into the charm directory."""
        try:
            url = (Path(self._charm.charm_dir) / ".juju-charm").read_text().strip()
        except OSError:
            return ""
        match = _CHARM_URL.search(url)
        return match.group(1) if match else ""

    def _image(self) -> str:
        """The workload image as Juju passed it (the resource's registry path)."""
        try:
            path = self._charm.model.resources.fetch(IMAGE_RESOURCE)
            text = Path(path).read_text()
        except Exception as e:  # resource-get fails in several ways; it only costs the hint
            logger.info("The rollback command names no image: %s", type(e).__name__)
            return ""
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            return ""
        image = data.get("registrypath") if isinstance(data, dict) else None
        return image if isinstance(image, str) and len(image) <= 300 else ""


def _bounded(value: str | None) -> str | None:
    return value if value and len(value) <= 300 else None


def _unavailable_message(failure: object) -> str:
    from refresh.statefulset import KubernetesUnavailable

    assert isinstance(failure, KubernetesUnavailable)
    if failure.needs_trust:
        return f"{failure.reason}: run juju trust kurrentdb --scope=cluster"
    return failure.reason


def _unavailable_status(failure: object, consequence: str) -> ops.StatusBase:
    from refresh.statefulset import KubernetesUnavailable

    assert isinstance(failure, KubernetesUnavailable)
    if failure.needs_trust:
        return ops.BlockedStatus(f"{consequence}: {_unavailable_message(failure)}")
    return ops.WaitingStatus(f"{consequence}: {failure.reason}; will retry")
