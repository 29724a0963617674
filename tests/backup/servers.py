"""Real object-storage servers on loopback for the backup tests, each on free ports.

- `start_radosgw`: Ceph radosgw (Debian's `radosgw`, `ceph-mon`, `ceph-osd`) in front of a
  single monitor and one memstore OSD, with the settings a one-node cluster on 127.0.0.1
  needs (no cephx, crc messenger mode, pool size 1, no host-level CRUSH separation).
- `start_moto`: moto's S3 server (`moto[server]` from uv.lock), the fast emulator.
- `start_azurite`: Azurite's blob service (npm `azurite`, pinned in tests/backup/package.json,
  installed by scripts/run-tests.sh into .tools/azurite).
- `TcpProxy`: a loopback TCP relay that can terminate TLS with a certificate of the test's
  own and record what clients send, for the TLS and checksum-header tests.

Each server keeps its data and logs in a directory of the caller's (a pytest tmp dir), and a
server that fails to come up raises `ServerUnavailable` with the end of its logs.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[2]
AZURITE_DIR = pathlib.Path(os.environ.get("AZURITE_DIR", ROOT / ".tools" / "azurite"))

# Azurite's well-known development account (published in Microsoft's Azurite docs).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# Credentials the S3 servers are started with: long enough to be unmistakable in any log.
S3_ACCESS_KEY = "BACKUPTESTACCESSKEY0"
S3_SECRET_KEY = "backup-test-secret-key-0123456789abcdefXYZ"

START_TIMEOUT = 90.0  # seconds; radosgw takes about 16 s on an idle machine


class ServerUnavailable(RuntimeError):  # noqa: N818 (reads as the fixtures use it)
    """A test server could not be started (missing package, failed start, timeout)."""


@dataclass
class Server:
    """A running server: where it answers, its processes and logs, how long it took."""

    name: str
    endpoint: str
    access_key: str
    secret_key: str
    data_dir: pathlib.Path
    start_seconds: float = 0.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[pathlib.Path] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of every log, for a failure message."""
        return _log_tail(self.logs, lines)

    def stop(self) -> None:
        """Stop every process (newest first), waiting for each."""
        for process in reversed(self.processes):
            _terminate(process)
        self.processes.clear()


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        # Their data is thrown away anyway: no need to wait long for a clean shutdown.
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _log_tail(logs: list[pathlib.Path], lines: int) -> str:
    parts = []
    for log in logs:
        with contextlib.suppress(OSError):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log} ---\n" + "\n".join(text))
    return "\n".join(parts)


def _spawn(server: Server, name: str, argv: list[str], **kwargs: object) -> None:
    log = server.data_dir / f"{name}.log"
    server.logs.append(log)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs
        )
    server.processes.append(process)


def _run(server: Server, argv: list[str], timeout: float = 60) -> str:
    """Run a setup command; its output goes to the server's setup log."""
    log = server.data_dir / "setup.log"
    if log not in server.logs:
        server.logs.append(log)
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    with open(log, "a") as out:
        out.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}(exit {result.returncode})\n")
    if result.returncode != 0:
        raise ServerUnavailable(f"{argv[0]} failed (exit {result.returncode}): {result.stderr}")
    return result.stdout


def _wait_until(server: Server, ready: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in server.processes:
            if process.poll() is not None:
                raise ServerUnavailable(
                    f"{server.name}: {process.args[0]} exited ({process.returncode}) while "
                    f"waiting for {what}\n{server.log_tail()}"
                )
        if ready():
            return
        time.sleep(0.2)
    raise ServerUnavailable(f"{server.name}: no {what} after {timeout:.0f} s\n{server.log_tail()}")


def _answers_http(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 (loopback, ours)
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer (403, 400) means it serves
        except (OSError, ValueError):
            return False

    return ready


def _started(server: Server, start: float, body: Callable[[], None]) -> Server:
    """Run ``body`` (the start-up steps); on any failure stop what was started."""
    try:
        body()
    except BaseException:
        server.stop()
        raise
    server.start_seconds = time.monotonic() - start
    return server


def start_moto(data_dir: pathlib.Path) -> Server:
    """moto's S3 server on a free port (any credentials are accepted)."""
    start = time.monotonic()
    port = free_port()
    server = Server(
        "moto", f"http://127.0.0.1:{port}", S3_ACCESS_KEY, S3_SECRET_KEY, data_dir=data_dir
    )
    data_dir.mkdir(parents=True, exist_ok=True)

    def body() -> None:
        _spawn(
            server,
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            cwd=data_dir,
        )
        _wait_until(server, _answers_http(server.endpoint), "HTTP answer", START_TIMEOUT)

    return _started(server, start, body)


def start_azurite(data_dir: pathlib.Path) -> Server:
    """Azurite's blob service on a free port, data in ``data_dir``."""
    binary = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise ServerUnavailable(
            f"Azurite is not installed at {binary}: run scripts/run-tests.sh (npm ci of "
            "tests/backup/package.json into .tools/azurite)"
        )
    start = time.monotonic()
    port = free_port()
    server = Server(
        "azurite",
        f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}",
        AZURITE_ACCOUNT,
        AZURITE_KEY,
        data_dir=data_dir,
    )
    data_dir.mkdir(parents=True, exist_ok=True)

    def body() -> None:
        _spawn(
            server,
            "azurite",
            [
                str(binary),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                str(port),
                "--location",
                str(data_dir / "data"),
                "--skipApiVersionCheck",
                "--loose",
                "--silent",
            ],
        )
        _wait_until(server, _answers_http(server.endpoint), "HTTP answer", START_TIMEOUT)

    return _started(server, start, body)


_CEPH_BINARIES = ("ceph-mon", "ceph-osd", "radosgw", "ceph", "monmaptool", "radosgw-admin")


def start_radosgw(data_dir: pathlib.Path) -> Server:
    """A one-node Ceph (mon + memstore OSD) with radosgw on free ports, and an S3 user."""
    missing = [name for name in _CEPH_BINARIES if shutil.which(name) is None]
    if missing:
        raise ServerUnavailable(
            f"Ceph is not installed ({', '.join(missing)} missing): apt-get install "
            "--no-install-recommends radosgw ceph-mon ceph-osd (scripts/run-tests.sh does)"
        )
    start = time.monotonic()
    mon_port, rgw_port = free_port(), free_port()
    server = Server(
        "radosgw", f"http://127.0.0.1:{rgw_port}", S3_ACCESS_KEY, S3_SECRET_KEY, data_dir
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "ceph.conf"
    fsid = str(uuid.uuid4())
    conf.write_text(_ceph_conf(data_dir, fsid, mon_port, rgw_port))
    ceph = ["-c", str(conf)]

    def mon_answers() -> bool:
        try:
            _run(server, ["ceph", *ceph, "--connect-timeout", "5", "mon", "stat"], timeout=15)
            return True
        except (ServerUnavailable, subprocess.TimeoutExpired):
            return False

    def body() -> None:
        for sub in ("mon", "osd", "run", "rgw"):
            (data_dir / sub).mkdir(exist_ok=True)
        monmap = str(data_dir / "monmap")
        _run(
            server,
            [
                "monmaptool",
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v2:127.0.0.1:{mon_port}]",
                monmap,
            ],
        )
        _run(server, ["ceph-mon", *ceph, "--mkfs", "-i", "a", "--monmap", monmap])
        _spawn(server, "ceph-mon", ["ceph-mon", *ceph, "-f", "-i", "a"])
        _wait_until(server, mon_answers, "monitor", START_TIMEOUT)
        osd_uuid = str(uuid.uuid4())
        osd_id = _run(server, ["ceph", *ceph, "osd", "new", osd_uuid]).strip()
        (data_dir / "osd" / osd_id).mkdir()
        _run(server, ["ceph-osd", *ceph, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid])
        # One host bucket holding the OSD, so CRUSH can place size-1 pools on it.
        for step in (
            ["osd", "crush", "add-bucket", "node", "host"],
            ["osd", "crush", "move", "node", "root=default"],
            ["osd", "crush", "add", f"osd.{osd_id}", "1.0", "host=node"],
        ):
            _run(server, ["ceph", *ceph, *step])
        _spawn(server, "ceph-osd", ["ceph-osd", *ceph, "-f", "-i", osd_id])
        _spawn(server, "radosgw", ["radosgw", *ceph, "-f", "-n", "client.rgw"])
        _wait_until(server, _answers_http(server.endpoint), "radosgw HTTP answer", START_TIMEOUT)
        _run(
            server,
            [
                "radosgw-admin",
                *ceph,
                "user",
                "create",
                "--uid=backup",
                "--display-name=backup tests",
                f"--access-key={S3_ACCESS_KEY}",
                f"--secret-key={S3_SECRET_KEY}",
            ],
        )

    return _started(server, start, body)


def _ceph_conf(data_dir: pathlib.Path, fsid: str, mon_port: int, rgw_port: int) -> str:
    return f"""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
# Without these two, radosgw loops on authentication error -13 with auth none.
ms client mode = crc
ms mon client mode = crc
ms bind msgr1 = false
osd objectstore = memstore
memstore device bytes = 8589934592
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd max object name len = 460
osd max object namespace len = 64
run dir = {data_dir}/run
admin socket = {data_dir}/run/$name.asok
pid file = {data_dir}/run/$name.pid
log file = {data_dir}/$name.ceph.log
keyring = {data_dir}/keyring
[mon.a]
mon data = {data_dir}/mon
[osd]
osd data = {data_dir}/osd/$id
osd journal = {data_dir}/osd/$id/journal
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw data = {data_dir}/rgw
rgw dns name = 127.0.0.1
"""


class TcpProxy:
    """A loopback TCP relay to ``target``; optionally TLS towards clients, and recording.

    ``recorded`` holds every byte clients sent (when ``record`` is set), so a test can look
    for a header in the requests a client made.
    """

    def __init__(
        self, target: tuple[str, int], tls: ssl.SSLContext | None = None, record: bool = False
    ):
        self._target = target
        self._tls = tls
        self._record = record
        self._lock = threading.Lock()
        self._recorded = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stopping = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def recorded(self) -> bytes:
        """What clients have sent so far."""
        with self._lock:
            return bytes(self._recorded)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            if self._tls is not None:
                client = self._tls.wrap_socket(client, server_side=True)
            upstream = socket.create_connection(self._target, timeout=30)
        except (OSError, ssl.SSLError):
            client.close()
            return
        with self._lock:
            self._sockets += [client, upstream]
        threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()
        self._pipe(client, upstream, self._record)

    def _pipe(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while chunk := source.recv(256 * 1024):
                if record:
                    with self._lock:
                        self._recorded += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def stop(self) -> None:
        """Stop accepting (relays in flight end with their connections)."""
        self._stopping.set()
        self._listener.close()

    def cut(self) -> None:
        """The storage goes away: stop accepting and drop every connection in flight."""
        self.stop()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
