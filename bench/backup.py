"""The backup engine against a real S3 server: throughput next to plain boto3, memory, and
what an incremental backup uploads.

For each dataset size (a synthetic KurrentDB data directory, `tests/backup/datadir.py`:
256 MiB chunks, the last one active and half full, index files about 5%):

- backup: `engine.create_backup` into an empty path, in a child process (its peak RSS is the
  child's ``ru_maxrss``); throughput = dataset bytes / seconds;
- download: `engine.download_and_verify` of that backup, in a child process;
- baseline: the same files with plain boto3 (``upload_file`` / ``download_file``, boto3's
  default transfer settings: 8 MiB parts, 10 threads), in a child process;
- ratio = engine throughput / boto3 throughput (target >= 0.8);
- on the largest size, incremental: 1% of the dataset appended to the log, backed up
  again; bytes uploaded as a share of the dataset (target < 3%).

Targets (issue #10): peak RSS of the backup < 200 MB and flat across sizes.

Run: `.venv/bin/python bench/backup.py [--server radosgw|moto] [--sizes 0.5,2] [--repeat 3]`.
The machine is shared, so each measurement is repeated (order alternating) and the best
and median are printed.
Prints numbers; asserts nothing. The servers come from tests/backup/servers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests" / "backup")]

GiB = 1 << 30
MiB = 1 << 20
CHUNK = 256 * MiB
BUCKET = "bench"


# -- what the child processes run ----------------------------------------------------------


def _settings(path: str) -> Any:
    from backup.settings import S3Settings

    return S3Settings(
        bucket=BUCKET,
        access_key=os.environ["BENCH_ACCESS_KEY"],
        secret_key=os.environ["BENCH_SECRET_KEY"],
        endpoint=os.environ["BENCH_ENDPOINT"],
        path=path,
        uri_style="path",
    )


def _boto3_client() -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=os.environ["BENCH_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id=os.environ["BENCH_ACCESS_KEY"],
        aws_secret_access_key=os.environ["BENCH_SECRET_KEY"],
        # Needed by radosgw (see src/backup/s3.py); the rest is boto3's defaults.
        config=Config(
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def _source() -> Any:
    from sources import SOURCE

    return SOURCE


def child(command: str, args: list[str]) -> dict[str, Any]:
    from backup import engine
    from backup.s3 import S3Store

    start = time.perf_counter()
    result: dict[str, Any] = {}
    if command == "backup":
        path, data_dir = args
        done = engine.create_backup(
            S3Store(_settings(path)), pathlib.Path(data_dir), _source(), lambda _: None
        )
        result = {
            "bytes_total": done.bytes_total,
            "bytes_uploaded": done.bytes_uploaded,
            "backup_id": done.backup_id,
        }
    elif command == "download":
        path, backup_id, staging = args
        store = S3Store(_settings(path))
        manifest = engine.load_manifest(store, backup_id)
        engine.download_and_verify(store, manifest, pathlib.Path(staging), lambda _: None)
    elif command == "boto3-upload":
        prefix, data_dir = args
        client = _boto3_client()
        for file in _files(pathlib.Path(data_dir)):
            client.upload_file(str(file), BUCKET, f"{prefix}/{file.relative_to(data_dir)}")
    elif command == "boto3-download":
        prefix, target = args
        client = _boto3_client()
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"{prefix}/"
        ):
            for entry in page.get("Contents", []):
                local = pathlib.Path(target, entry["Key"][len(prefix) + 1 :])
                local.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(BUCKET, entry["Key"], str(local))
    result["seconds"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result["max_rss_bytes"] = usage.ru_maxrss * 1024
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return result


def _files(data_dir: pathlib.Path) -> list[pathlib.Path]:
    """The files the engine backs up, so the baseline moves the same bytes."""
    from backup import layout

    walk = layout.BackupWalk(data_dir)
    return [data_dir / source.path for source in walk.files()]


# -- the parent ------------------------------------------------------------------------------


def run_child(env: dict[str, str], command: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", command, *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        sys.exit(f"{command} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def empty_bucket(env: dict[str, str], prefix: str) -> None:
    client = _boto3_client_from(env)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys = [{"Key": entry["Key"]} for entry in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    conf = env.get("BENCH_CEPH_CONF")
    if conf:
        # radosgw frees deleted objects' data only in garbage collection, two hours later by
        # default; its memstore OSD holds 8 GiB, so collect now.
        subprocess.run(
            ["radosgw-admin", "-c", conf, "-n", "client.admin", "gc", "process", "--include-all"],
            check=True,
            capture_output=True,
        )


def _boto3_client_from(env: dict[str, str]) -> Any:
    os.environ.update({k: v for k, v in env.items() if k.startswith("BENCH_")})
    return _boto3_client()


def mbps(size: int, seconds: float) -> float:
    return size / MiB / seconds


def one_round(
    env: dict[str, str], work: pathlib.Path, data: pathlib.Path, name: str, engine_first: bool
) -> dict[str, dict[str, Any]]:
    """Engine backup + download and boto3 upload + download of ``data``, each path emptied
    afterwards (radosgw keeps objects in RAM); the order alternates between rounds."""
    staging = work / "staging"
    runs: dict[str, dict[str, Any]] = {}

    def engine_runs() -> None:
        runs["backup"] = run_child(env, "backup", f"engine-{name}", str(data))
        backup_id = runs["backup"]["backup_id"]
        runs["download"] = run_child(env, "download", f"engine-{name}", backup_id, str(staging))
        shutil.rmtree(staging)

    def boto3_runs() -> None:
        runs["boto3 upload"] = run_child(env, "boto3-upload", f"boto3-{name}", str(data))
        runs["boto3 download"] = run_child(env, "boto3-download", f"boto3-{name}", str(staging))
        shutil.rmtree(staging)
        empty_bucket(env, f"boto3-{name}/")

    for step in (engine_runs, boto3_runs) if engine_first else (boto3_runs, engine_runs):
        step()
    return runs


def measure(
    env: dict[str, str],
    work: pathlib.Path,
    size: int,
    seed: int,
    incremental: bool,
    repeat: int,
) -> None:
    from datadir import DataDirSpec, SyntheticDataDir

    # n-1 full chunks and a half-full active one hold the log's 95% of ``size``.
    chunks = max(2, int(size * 0.95 / CHUNK + 1))
    data = work / f"data-{seed}"
    generated = time.perf_counter()
    node = SyntheticDataDir.create(
        data, DataDirSpec(total_size=size, chunks=chunks, chunk_size=CHUNK, seed=seed)
    )
    generated = time.perf_counter() - generated
    dataset = sum(f.stat().st_size for f in _files(data))
    print(
        f"\n== dataset {dataset / GiB:.2f} GiB: {chunks} chunks of 256 MiB "
        f"(made in {generated:.1f} s), {repeat} rounds"
    )
    rounds = []
    for n in range(repeat):
        rounds.append(one_round(env, work, data, f"{seed}-{n}", engine_first=n % 2 == 0))
        if n < repeat - 1 or not incremental:
            empty_bucket(env, f"engine-{seed}-{n}/")

    def seconds(name: str) -> list[float]:
        return sorted(r[name]["seconds"] for r in rounds)

    row = "{:<15} best {:6.1f} s = {:6.1f} MiB/s   median {:6.1f} s = {:6.1f} MiB/s   all: {}"
    for name in ("backup", "boto3 upload", "download", "boto3 download"):
        times = seconds(name)
        best, middle = times[0], statistics.median(times)
        spread = ", ".join(f"{t:.1f}" for t in times)
        print(row.format(name, best, mbps(dataset, best), middle, mbps(dataset, middle), spread))
    for engine_name, boto3_name in (("backup", "boto3 upload"), ("download", "boto3 download")):
        best = seconds(boto3_name)[0] / seconds(engine_name)[0]
        middle = statistics.median(seconds(boto3_name)) / statistics.median(seconds(engine_name))
        print(f"{engine_name} throughput / boto3's: best {best:.2f}, median {middle:.2f}")
    first = rounds[0]["backup"]
    print(
        f"uploaded by a first backup: {first['bytes_uploaded'] / MiB:.0f} MiB "
        f"of {first['bytes_total'] / MiB:.0f} MiB"
    )
    peaks = {name: max(r[name]["max_rss_bytes"] for r in rounds) / 1e6 for name in rounds[0]}
    print("peak RSS (max over rounds): " + ", ".join(f"{k} {v:.0f} MB" for k, v in peaks.items()))
    cpu = {name: min(r[name]["cpu_seconds"] for r in rounds) for name in rounds[0]}
    print("CPU seconds (least over rounds): " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))

    if incremental:
        added = dataset // 100
        node.grow_active(added)
        again = run_child(env, "backup", f"engine-{seed}-{repeat - 1}", str(data))
        share = again["bytes_uploaded"] / dataset * 100
        print(f"incremental after {added / MiB:.0f} MiB (1%) appended:")
        print(f"  {again['bytes_uploaded'] / MiB:.1f} MiB uploaded = {share:.2f}% of the dataset")
        print(f"  in {again['seconds']:.1f} s, peak RSS {again['max_rss_bytes'] / 1e6:.0f} MB")
        empty_bucket(env, f"engine-{seed}-{repeat - 1}/")
    shutil.rmtree(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["radosgw", "moto"], default="radosgw")
    parser.add_argument("--sizes", default="0.5,2", help="dataset sizes in GiB, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size (best, median)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(child(options.child[0], options.child[1:])))
        return

    import servers

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-backup-"))
    start = servers.start_radosgw if options.server == "radosgw" else servers.start_moto
    server = start(work / "server")
    try:
        print(f"{server.name} up in {server.start_seconds:.1f} s at {server.endpoint}")
        env = {
            **os.environ,
            "BENCH_ENDPOINT": server.endpoint,
            "BENCH_ACCESS_KEY": server.access_key,
            "BENCH_SECRET_KEY": server.secret_key,
        }
        if server.name == "radosgw":
            env["BENCH_CEPH_CONF"] = str(server.data_dir / "ceph.conf")
        _boto3_client_from(env).create_bucket(Bucket=BUCKET)
        sizes = [float(s) for s in options.sizes.split(",")]
        for n, size in enumerate(sizes):
            incremental = size == max(sizes)
            measure(env, work, int(size * GiB), n + 1, incremental, options.repeat)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
