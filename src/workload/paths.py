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
CA_DIR = f"{CERTS_DIR}/ca"
CA_FILE = f"{CA_DIR}/ca.crt"
DATA_DIR = "/var/lib/kurrentdb"
PASSWD_FILE = "/etc/passwd"  # noqa: S105 - the user database, no password in it

# The image's non-root user; its uid is 1001 from KurrentDB 26.0 and 1000 before.
WORKLOAD_USER = "kurrent"

HTTP_PORT = 2113
REPLICATION_PORT = 1112
