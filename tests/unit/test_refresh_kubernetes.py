"""The refresh's Kubernetes calls (`refresh.statefulset`) against lightkube's own models.

A fake lightkube client answers with the objects lightkube builds from the API server's
JSON (apps/v1 StatefulSet, core/v1 Pod) or raises lightkube's ApiError with a Status body,
as a real API server does for a missing permission (403) or object (404).
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import StatefulSet
from lightkube.resources.core_v1 import Pod

from refresh import statefulset
from refresh.plan import StatefulSetView

# The real calls: the suite's autouse fixture replaces them with "no Kubernetes API here".
read, pod_revision, set_partition = (
    statefulset.read,
    statefulset.pod_revision,
    statefulset.set_partition,
)


def api_error(code: int, reason: str) -> ApiError:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    return ApiError(response=httpx2.Response(code, json=body | {"code": code, "reason": reason}))


class FakeClient:
    def __init__(self, objects: dict[type, dict[str, Any]], error: Exception | None = None):
        self.objects, self.error = objects, error
        self.patches: list[tuple[type, str, dict, str]] = []

    def get(self, kind: type, name: str, namespace: str) -> Any:
        if self.error is not None:
            raise self.error
        return kind.from_dict(self.objects[kind][name])

    def patch(self, kind: type, name: str, patch: dict, namespace: str) -> None:
        if self.error is not None:
            raise self.error
        self.patches.append((kind, name, patch, namespace))


def statefulset_json(update: str | None = "kurrentdb-6c9f", partition: Any = 2) -> dict:
    rolling = {} if partition is None else {"partition": partition}
    return {
        "metadata": {"name": "kurrentdb"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "kurrentdb"}},
            "serviceName": "kurrentdb-endpoints",
            "template": {},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
        },
        "status": {"replicas": 3} | ({"updateRevision": update} if update else {}),
    }


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    fake = FakeClient(
        {
            StatefulSet: {"kurrentdb": statefulset_json()},
            Pod: {
                "kurrentdb-1": {
                    "metadata": {
                        "name": "kurrentdb-1",
                        "labels": {"controller-revision-hash": "kurrentdb-5b7d"},
                    }
                },
                "kurrentdb-2": {"metadata": {"name": "kurrentdb-2", "labels": {}}},
            },
        }
    )
    monkeypatch.setattr(statefulset, "_client", lambda: fake)
    return fake


def test_the_pods_revision_is_its_controller_revision_hash(client: FakeClient) -> None:
    assert pod_revision("kurrentdb-1", "prod") == "kurrentdb-5b7d"
    missing = pod_revision("kurrentdb-2", "prod")
    assert isinstance(missing, statefulset.KubernetesUnavailable)
    assert "controller-revision-hash" in missing.reason


def test_the_statefulset_view(client: FakeClient) -> None:
    assert read("kurrentdb", "prod") == StatefulSetView("kurrentdb-6c9f", 2)


@pytest.mark.parametrize("partition", [None, -3])
def test_a_partition_that_is_not_a_count_reads_as_0(client: FakeClient, partition: Any) -> None:
    client.objects[StatefulSet]["kurrentdb"] = statefulset_json(partition=partition)
    assert read("kurrentdb", "prod") == StatefulSetView("kurrentdb-6c9f", 0)


@pytest.mark.parametrize("partition", [True, "2", 2.5])
def test_a_partition_of_another_type_is_unavailable(client: FakeClient, partition: Any) -> None:
    """lightkube's models refuse it: the StatefulSet cannot be read, never a crash."""
    client.objects[StatefulSet]["kurrentdb"] = statefulset_json(partition=partition)
    assert isinstance(read("kurrentdb", "prod"), statefulset.KubernetesUnavailable)


def test_no_update_revision_is_unavailable(client: FakeClient) -> None:
    client.objects[StatefulSet]["kurrentdb"] = statefulset_json(update=None)
    assert isinstance(read("kurrentdb", "prod"), statefulset.KubernetesUnavailable)


def test_setting_the_partition_patches_the_rolling_update(client: FakeClient) -> None:
    assert set_partition("kurrentdb", "prod", 1) is None
    assert client.patches == [
        (
            StatefulSet,
            "kurrentdb",
            {"spec": {"updateStrategy": {"rollingUpdate": {"partition": 1}}}},
            "prod",
        )
    ]


@pytest.mark.parametrize(("code", "trust"), [(403, True), (404, False), (500, False)])
def test_api_errors_say_whether_trust_is_missing(
    client: FakeClient, code: int, trust: bool
) -> None:
    client.error = api_error(code, "Forbidden" if code == 403 else "Other")
    for answer in (
        read("kurrentdb", "prod"),
        set_partition("kurrentdb", "prod", 0),
        pod_revision("kurrentdb-1", "prod"),
    ):
        assert isinstance(answer, statefulset.KubernetesUnavailable)
        assert answer.needs_trust is trust
        assert f"HTTP {code}" in answer.reason


def test_no_cluster_config_is_unavailable_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    answer = read("kurrentdb", "prod")
    assert isinstance(answer, statefulset.KubernetesUnavailable) and not answer.needs_trust


@given(st.one_of(st.none(), st.text(max_size=300), st.integers(), st.lists(st.text(max_size=3))))
def test_any_revision_label_is_used_only_when_it_is_a_plain_string(value: Any) -> None:
    labels = {} if value is None else {"controller-revision-hash": value}
    fake = FakeClient({Pod: {"p": {"metadata": {"name": "p", "labels": labels}}}})
    original = statefulset._client
    statefulset._client = lambda: fake  # type: ignore[assignment]
    try:
        answer = pod_revision("p", "prod")
    finally:
        statefulset._client = original  # type: ignore[assignment]
    if isinstance(value, str) and value:
        assert answer == value
    else:
        assert isinstance(answer, statefulset.KubernetesUnavailable)
