"""Pod role labels against a loopback stand-in for the Kubernetes API (PATCH on a pod)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import kubernetes

# The unit tests' autouse fixture replaces kubernetes.label_pod; these tests want the real one.
label_pod = kubernetes.label_pod


class FakeKubernetesAPI:
    """Answers PATCH /api/v1/namespaces/<ns>/pods/<name> as the API server does."""

    def __init__(self, status: int = 200):
        self.status = status
        self.patches: list[tuple[str, str, dict]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
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
                    answer = {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "message": "pods is forbidden",
                        "reason": "Forbidden",
                        "code": api.status,
                    }
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
