"""Start times of the backup test servers, and S3Store/AzureStore throughput on each.

    .venv/bin/python bench/object_stores.py [--mib 256] [--servers moto,radosgw,azurite]

For each server: seconds to start (until it answers), then a SIZE MiB file uploaded and
downloaded through the charm's store (8 MiB parts, 4 in flight), MB/s each way, whether
the sha256 matched, and the growth of this process's peak RSS during the transfers.
Numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import resource
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "lib"), str(ROOT / "tests" / "backup")]

import backends  # noqa: E402
import servers  # noqa: E402

MiB = 1024 * 1024
STARTERS = {
    "moto": (servers.start_moto, backends.fresh_s3_store),
    "radosgw": (servers.start_radosgw, backends.fresh_s3_store),
    "azurite": (servers.start_azurite, backends.fresh_azure_store),
}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def sha256_of(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(MiB):
            digest.update(block)
    return digest.hexdigest()


def bench(name: str, size_mib: int, work: pathlib.Path) -> None:
    start, fresh_store = STARTERS[name]
    original = work / "original"
    server = start(work / name)
    try:
        with fresh_store(server) as store:
            rss_before = peak_rss_mib()
            began = time.monotonic()
            with original.open("rb") as source:
                store.upload("bench/object", source)
            upload_s = time.monotonic() - began
            copy = work / f"copy-{name}"
            began = time.monotonic()
            with copy.open("wb") as sink:
                store.download("bench/object", sink)
            download_s = time.monotonic() - began
            same = sha256_of(copy) == sha256_of(original)
            copy.unlink()
            store.delete("bench/object")
        mb = size_mib * MiB / 1e6
        print(
            f"{name:8s} start {server.start_seconds:5.1f} s  upload {mb / upload_s:6.1f} MB/s"
            f"  download {mb / download_s:6.1f} MB/s  sha256 {'equal' if same else 'DIFFERENT'}"
            f"  peak RSS +{peak_rss_mib() - rss_before:.0f} MiB",
            flush=True,
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--servers", default=",".join(STARTERS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-stores-") as scratch:
        work = pathlib.Path(scratch)
        with (work / "original").open("wb") as out:
            for _ in range(args.mib):
                out.write(os.urandom(MiB))
        print(
            f"{args.mib} MiB object, 8 MiB parts, 4 in flight; cores: {os.cpu_count()}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        for name in args.servers.split(","):
            try:
                bench(name, args.mib, work)
            except servers.ServerUnavailable as unavailable:
                print(f"{name:8s} unavailable: {str(unavailable).splitlines()[0]}")


if __name__ == "__main__":
    main()
