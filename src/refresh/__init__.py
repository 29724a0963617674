"""`juju refresh` of KurrentDB: one unit at a time, highest first, the leader handed over.

Modules:
- `capability`: what the charm builds: the refresh actions, this unit's refresh keys, the
  leader's coordination through the StatefulSet partition, statuses;
- `plan`: the decisions, pure (which unit Kubernetes may replace next, and why not yet);
- `versions`: which KurrentDB version changes roll online (KurrentDB's upgrade guide);
- `checks`: what `pre-refresh-check` requires;
- `statefulset`: the Kubernetes calls (lightkube, imported only when a refresh needs it).

Built here rather than on the charm-refresh library: importing it costs about 190 ms per
hook (measured next to ops in the closing note), it calls Juju's hook tools itself so
Scenario cannot run it, and its statuses bypass collect-status.
"""
