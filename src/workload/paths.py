"""Where things live in the KurrentDB container, and the ports it serves."""

CONTAINER = "kurrentdb"
SERVICE = "kurrentdb"
CHECK = "kurrentdb-live"

BINARY = "/opt/kurrentdb/KurrentDB"
CONFIG_FILE = "/etc/kurrentdb/kurrentdb.conf"
CERTS_DIR = "/etc/kurrentdb/certs"
NODE_CERT_FILE = f"{CERTS_DIR}/node.crt"
NODE_KEY_FILE = f"{CERTS_DIR}/node.key"
# KurrentDB's TrustedRootCertificatesPath is a directory of trusted roots, not a file.
# KurrentDB reads one certificate per file there (`CertificateUtils.LoadAllCertificates`:
# `new X509Certificate2(bytes)` takes a PEM file's first certificate), so each trusted root
# has its own file: the internal CA's is CA_FILE, any other is named after its fingerprint.
CA_DIR = f"{CERTS_DIR}/ca"
CA_FILE = f"{CA_DIR}/ca.crt"
# The same roots in one bundle, for clients that read a bundle (curl in the health check).
TRUST_BUNDLE = f"{CERTS_DIR}/trusted-roots.pem"
DATA_DIR = "/var/lib/kurrentdb"
PASSWD_FILE = "/etc/passwd"  # noqa: S105 - the user database, no password in it
GROUP_FILE = "/etc/group"
# What the running process was started with and last reloaded (see workload.kurrentdb).
# Beside the config it describes: both vanish together when the container is recreated.
APPLIED_FILE = "/etc/kurrentdb/charm-applied.json"

# The image's non-root user; its uid is 1001 from KurrentDB 26.0 and 1000 before.
WORKLOAD_USER = "kurrent"
WORKLOAD_GROUP = "kurrent"

# Pebble waits this long for KurrentDB to exit on a stop before it sends SIGKILL; KurrentDB
# needs about 7 s to shut down cleanly.
KILL_DELAY_SECONDS = 20

# Juju puts its Pebble binary into every workload container, with the socket beside it.
PEBBLE_BINARY = "/charm/bin/pebble"
PEBBLE_SOCKET = "/charm/container/pebble.socket"

HTTP_PORT = 2113
REPLICATION_PORT = 1112
