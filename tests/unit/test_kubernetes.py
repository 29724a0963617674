"""Pod role labels and the app's pods, against a loopback stand-in for the Kubernetes API
(PATCH on a pod, GET of the namespace's pods)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import kubernetes

# The unit tests' autouse fixture replaces kubernetes.label_pod; these tests want the real one.
label_pod = kubernetes.label_pod
app_pod_ordinals = kubernetes.app_pod_ordinals


def statefulset_pod(name: str, owner: str = "kurrentdb", deleting: bool = False) -> dict:
    metadata: dict = {
        "name": name,
        "namespace": "prod",
        "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": owner, "uid": "u-1"}
        ],
    }
    if deleting:
        metadata["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def forbidden(status: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "message": "pods is forbidden",
        "reason": "Forbidden",
        "code": status,
    }


class FakeKubernetesAPI:
    """Answers PATCH /api/v1/namespaces/<ns>/pods/<name> as the API server does."""

    def __init__(self, status: int = 200):
        self.status = status
        self.patches: list[tuple[str, str, dict]] = []
        self.pods: list[dict] = []
        self.gets: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                api.gets.append(self.path)
                if api.status == 200:
                    answer = {
                        "apiVersion": "v1",
                        "kind": "PodList",
                        "metadata": {"resourceVersion": "1"},
                        "items": api.pods,
                    }
                else:
                    answer = forbidden(api.status)
                data = json.dumps(answer).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PATCH(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.patches.append((self.path, self.headers["Content-Type"], body))
                if api.status == 200:
                    name = self.path.rsplit("/", 1)[1].split("?")[0]
                    answer = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {"name": name, **body["metadata"]},
                    }
                else:
                    answer = forbidden(api.status)
                data = json.dumps(answer).encode()
                self.send_response(api.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api(tmp_path, monkeypatch):
    fake = FakeKubernetesAPI()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": fake.url}}],
                "contexts": [
                    {
                        "name": "test",
                        "context": {"cluster": "test", "user": "test", "namespace": "prod"},
                    }
                ],
                "users": [{"name": "test", "user": {"token": "t"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    yield fake
    fake.close()


def test_label_pod_patches_the_role_label(api):
    assert label_pod("kurrentdb-1", "prod", "Follower") is True
    path, content_type, body = api.patches[0]
    assert path.startswith("/api/v1/namespaces/prod/pods/kurrentdb-1")
    assert "merge-patch+json" in content_type
    assert body == {"metadata": {"labels": {"kurrentdb-role": "follower"}}}


def test_forbidden_is_logged_not_raised(api, caplog):
    api.status = 403
    assert label_pod("kurrentdb-1", "prod", "Leader") is False
    assert "Cannot label pod kurrentdb-1 with its role" in caplog.text


def test_no_kubernetes_api_is_logged_not_raised(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert label_pod("kurrentdb-1", "prod", "Leader") is False
    assert "Cannot label pod" in caplog.text


# --- the app's pods -----------------------------------------------------------------------


def test_app_pods_are_the_statefulsets_pods_not_being_deleted(api):
    api.pods = [
        statefulset_pod("kurrentdb-0"),
        statefulset_pod("kurrentdb-1"),
        statefulset_pod("kurrentdb-4"),  # created at once with kurrentdb-3, by the same scale
        statefulset_pod("kurrentdb-3"),
        statefulset_pod("kurrentdb-2", deleting=True),  # a scale-down Kubernetes carries out
        statefulset_pod("kurrentdb-admin-0", owner="kurrentdb-admin"),  # another app
        statefulset_pod("modeloperator-5d8f"),
    ]
    assert app_pod_ordinals("kurrentdb", "prod", "kurrentdb-0") == {0, 1, 3, 4}
    assert api.gets[0].startswith("/api/v1/namespaces/prod/pods")


def test_app_pods_are_unknown_without_permission(api, caplog):
    api.status = 403
    assert app_pod_ordinals("kurrentdb", "prod", "kurrentdb-0") is None
    assert "Cannot list the pods of kurrentdb: pods is forbidden" in caplog.text


def test_app_pods_are_unknown_without_a_kubernetes_api(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert app_pod_ordinals("kurrentdb", "prod", "kurrentdb-0") is None
    assert "Cannot list the pods of kurrentdb" in caplog.text


def test_a_pod_list_without_this_units_pod_is_not_trusted(api, caplog):
    # Pods listed with another app's labels, or from another namespace: not our StatefulSet.
    api.pods = [statefulset_pod("kurrentdb-1"), statefulset_pod("kurrentdb-2")]
    assert app_pod_ordinals("kurrentdb", "prod", "kurrentdb-0") is None
    assert "lacks this unit's pod kurrentdb-0" in caplog.text
