"""Backup and restore of a KurrentDB node to object storage (S3 or Azure Blob).

Modules:
- `capability`: what the charm builds: the storage relations, the backup actions, and the
  restore's entry points for the reconcile;
- `store`: the object-store interface every backend implements, and its errors;
- `s3`, `azure`: the two backends (boto3, azure-storage-blob; imported only when used);
- `settings`, `relations`: the storage relations' data, validated into backend settings;
- `layout`: which files of a KurrentDB data directory a backup holds, in which order;
- `engine`, `manifest`, `transfer`: content-addressed, incremental backup; manifests;
  download and verify;
- `restore`: the restore state machine (pure); `participant`: this unit's part in it;
- `swap`: a restore's steps on one unit's volume, crash-safe.
"""

# The storage relations (metadata.yaml); here so that the charm can tell whether one exists
# without importing the modules that parse them.
S3_ENDPOINT = "s3-parameters"
AZURE_ENDPOINT = "azure-storage"
STORAGE_ENDPOINTS = (S3_ENDPOINT, AZURE_ENDPOINT)
# Where a restore shows itself (peer databags, this unit's volume), so that a hook with no
# restore anywhere can tell without importing the restore modules (tests check they agree
# with `restore.DATABAG_KEY` and `swap.RESTORE_DIR`/`swap.MARKER_NAME`).
RESTORE_KEY = "restore"
RESTORE_MARKER = ".restore/marker.json"
