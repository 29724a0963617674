"""Backup and restore of a KurrentDB node to object storage (S3 or Azure Blob).

Modules:
- `store`: the object-store interface every backend implements, and its errors;
- `s3`, `azure`: the two backends (boto3, azure-storage-blob; imported only when used);
- `settings`: the storage relations' data, validated into backend settings;
- `layout`: which files of a KurrentDB data directory a backup holds, in which order;
- `engine`: content-addressed, incremental backup; manifests; download and verify.
"""
