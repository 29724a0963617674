#!/usr/bin/env python3
"""Pack the charm for real with charmcraft in destructive mode, on a host that is not Ubuntu.

Usage: pack_charm.py [--python PY312] [--uv UV] [--project-dir DIR] [--keep] OUTPUT_DIR

Runs with charmcraft's own venv Python (.tools/charmcraft/bin/python, which
scripts/run-tests.sh installs); started with another Python it re-executes itself with that
one. Writes exactly one `<name>_<platform>.charm` into OUTPUT_DIR and prints its path last.

What it does, and why (dev-environment.md, "A real charmcraft pack works here";
juju-facts.md §13):
- packs a clean copy of the project (`git ls-files`: tracked files plus untracked ones that
  are not ignored, so a module not yet `git add`ed still reaches the charm; outside a git
  work tree, a copy without .venv/.tools/__pycache__/build outputs): charmcraft ignores
  only `.venv` when it copies the source, and destructive mode writes parts/, stage/ and
  prime/ into the project directory;
- puts a Python 3.12 (the ubuntu@24.04 base's) first on PATH as `python3`, since the uv
  plugin builds venv/ with the first `python3` it finds, and `uv` next to it in place of the
  `astral-uv` build snap;
- points HOME and the XDG dirs at a scratch dir (charmcraft writes its logs and state
  there), but keeps uv's cache where it is (UV_CACHE_DIR, else `uv cache dir`), so a pack
  after `uv sync` reuses the wheels the project venv already downloaded;
- bypasses three host checks that do not apply to this build, by patching charmcraft's
  classes before calling its main() (names below are from charmcraft 4.5.0,
  craft-application 7.5.0, craft-parts 2.37.2 as installed under
  .tools/charmcraft/lib/python3.12/site-packages);
- guarantees no LXD/multipass/snap/apt: `--destructive-mode` plus CRAFT_BUILD_ENVIRONMENT=host,
  the provider entry points patched to raise, and `snap`, `lxc`, `multipass`, `apt-get`
  shims on PATH that record any call (the pack fails if one was made).
"""

from __future__ import annotations

import argparse
import atexit
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHARMCRAFT_PYTHON = ROOT / ".tools" / "charmcraft" / "bin" / "python"
# The charm's base (charmcraft.yaml `base: ubuntu@24.04`) runs Python 3.12: venv/ must be
# built with the same minor version or the charm cannot import its dependencies on the node.
BASE_PYTHON = (3, 12)
# Commands a destructive-mode pack of this charm must never run.
FORBIDDEN_COMMANDS = ("snap", "lxc", "lxd", "multipass", "apt-get", "apt")
# Copied when the project is not a git work tree: everything but these.
NON_GIT_EXCLUDES = {
    ".git",
    ".venv",
    ".tools",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".coverage",
    "build",
    "parts",
    "stage",
    "prime",
}


def main() -> int:
    """Pack, check nothing forbidden ran, move the .charm to OUTPUT_DIR."""
    args = parse_args()
    ensure_charmcraft_python()
    project = args.project_dir.resolve()
    output = args.output_dir.resolve()
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("*.charm"):
        stale.unlink()  # the artifact tests take the one .charm in OUTPUT_DIR

    python = find_python(args.python)
    uv = find_uv(args.uv)
    uv_cache = os.environ.get("UV_CACHE_DIR") or run_text([uv, "cache", "dir"])

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="pack-charm-"))
    ok = False

    def cleanup() -> None:
        if ok and not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"pack_charm: scratch dir kept: {scratch}", file=sys.stderr)

    # At exit, and registered before charmcraft runs: charmcraft's own atexit callbacks
    # (craft_application StateService._destroy_state_dir) remove state dirs under the
    # scratch HOME, and atexit runs callbacks last-registered first.
    atexit.register(cleanup)
    try:
        source = scratch / "project"
        copy_project(project, source)
        bin_dir = make_bin_dir(scratch, python, uv)
        set_environment(scratch, bin_dir, uv_cache)
        print(f"pack_charm: python3 = {python}, uv = {uv}, uv cache = {uv_cache}", flush=True)
        print(f"pack_charm: packing a clean copy of {project} in {source}", flush=True)
        t0 = time.monotonic()
        rc = run_charmcraft(source, output)
        elapsed = time.monotonic() - t0
        called = forbidden_calls(scratch)
        if called:
            print(f"pack_charm: charmcraft ran forbidden commands:\n{called}", file=sys.stderr)
            return 1
        if rc != 0:
            print_log_tail(scratch)
            return rc
        charms = sorted(output.glob("*.charm"))
        if len(charms) != 1:
            print(f"pack_charm: expected one .charm in {output}, found {charms}", file=sys.stderr)
            return 1
        size = charms[0].stat().st_size
        print(f"pack_charm: packed in {elapsed:.1f} s, {size} bytes ({size / 1e6:.1f} MB)")
        print(charms[0])
        ok = True
        return 0
    finally:
        os.chdir(ROOT)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=pathlib.Path, help="where to write the .charm")
    parser.add_argument("--python", help="the Python 3.12 to build venv/ with (default: search)")
    parser.add_argument("--uv", help="the uv binary (default: $UV, then PATH)")
    parser.add_argument("--project-dir", type=pathlib.Path, default=ROOT)
    parser.add_argument("--keep", action="store_true", help="keep the scratch dir")
    return parser.parse_args()


def ensure_charmcraft_python() -> None:
    """Re-execute with charmcraft's venv Python when charmcraft is not importable here."""
    try:
        import charmcraft  # noqa: F401
    except ImportError:
        if CHARMCRAFT_PYTHON.is_file() and pathlib.Path(sys.executable) != CHARMCRAFT_PYTHON:
            argv = [str(CHARMCRAFT_PYTHON), __file__, *sys.argv[1:]]
            os.execv(CHARMCRAFT_PYTHON, argv)  # noqa: S606
        sys.exit(
            f"pack_charm: charmcraft is not importable from {sys.executable} and "
            f"{CHARMCRAFT_PYTHON} does not exist: run scripts/run-tests.sh once to install it"
        )


def python_version(python: str) -> tuple[int, int] | None:
    """(major, minor) of `python`, None when it does not run."""
    try:
        out = run_text([python, "-c", "import sys; print(*sys.version_info[:2])"])
    except (OSError, subprocess.CalledProcessError):
        return None
    major, minor = out.split()
    return int(major), int(minor)


def find_python(explicit: str | None) -> str:
    """A real (non-venv, non-shim) Python 3.12 executable."""
    if explicit:
        candidates = [explicit]
    else:
        candidates = [os.environ.get("PACK_PYTHON", "")]
        pyenv_root = pathlib.Path(
            os.environ.get("PYENV_ROOT") or pathlib.Path.home() / ".pyenv"
        ).expanduser()
        candidates += sorted(
            (str(p) for p in pyenv_root.glob("versions/3.12.*/bin/python3.12")), reverse=True
        )
        candidates += [shutil.which("python3.12") or "", "/usr/bin/python3.12"]
    for candidate in filter(None, candidates):
        if python_version(candidate) == BASE_PYTHON:
            # The interpreter itself, not a pyenv shim or a venv's symlink.
            return run_text([candidate, "-c", "import sys; print(sys._base_executable)"])
    wanted = ".".join(map(str, BASE_PYTHON))
    sys.exit(f"pack_charm: no Python {wanted} found (tried {candidates}); pass --python")


def find_uv(explicit: str | None) -> str:
    """The uv executable (resolved: the build runs with another HOME and PATH)."""
    uv = explicit or os.environ.get("UV") or shutil.which("uv")
    if not uv:
        user_bin = pathlib.Path.home() / ".local" / "bin" / "uv"
        uv = str(user_bin) if user_bin.is_file() else None
    if not uv:
        sys.exit("pack_charm: uv not found: pass --uv or put it on PATH")
    resolved = shutil.which(uv)
    if resolved is None:
        sys.exit(f"pack_charm: {uv} is not an executable")
    return str(pathlib.Path(resolved).resolve())


def run_text(cmd: list[str], cwd: pathlib.Path | None = None) -> str:
    """Run `cmd`, return its stripped stdout."""
    return subprocess.run(  # noqa: S603
        cmd, cwd=cwd, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL
    ).stdout.strip()


def copy_project(project: pathlib.Path, dest: pathlib.Path) -> None:
    """Copy what git would commit (or, outside git, all but the excluded dirs) to `dest`."""
    try:
        inside = run_text(["git", "rev-parse", "--is-inside-work-tree"], cwd=project) == "true"
    except (OSError, subprocess.CalledProcessError):
        inside = False
    if not inside:
        shutil.copytree(
            project,
            dest,
            symlinks=True,
            ignore=lambda _dir, names: [
                n for n in names if n in NON_GIT_EXCLUDES or n.endswith((".charm", ".pyc"))
            ],
        )
        return
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],  # noqa: S607
        cwd=project,
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    ).stdout.decode()
    dest.mkdir()
    for name in sorted(set(filter(None, listing.split("\0")))):
        src = project / name
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the work tree, not yet committed
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)


def make_bin_dir(scratch: pathlib.Path, python: str, uv: str) -> pathlib.Path:
    """A bin dir to put first on PATH: python3 (3.12), uv, and shims that record calls."""
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    version = ".".join(map(str, BASE_PYTHON))
    for name in ("python3", f"python{version}"):
        (bin_dir / name).symlink_to(python)
    (bin_dir / "uv").symlink_to(uv)
    calls = scratch / "forbidden-calls.log"
    for name in FORBIDDEN_COMMANDS:
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\nexit 1\n')
        shim.chmod(0o755)
    return bin_dir


def forbidden_calls(scratch: pathlib.Path) -> str:
    """What the forbidden-command shims recorded."""
    calls = scratch / "forbidden-calls.log"
    return calls.read_text() if calls.exists() else ""


def set_environment(scratch: pathlib.Path, bin_dir: pathlib.Path, uv_cache: str) -> None:
    """HOME/XDG in the scratch dir, our bin dir first on PATH, destructive mode."""
    home = scratch / "home"
    env = {
        "HOME": home,
        "XDG_CONFIG_HOME": home / ".config",
        "XDG_CACHE_HOME": home / ".cache",
        "XDG_DATA_HOME": home / ".local" / "share",
        "XDG_STATE_HOME": home / ".local" / "state",
        "XDG_RUNTIME_DIR": scratch / "run",
    }
    for path in env.values():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ.update({k: str(v) for k, v in env.items()})
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    os.environ["UV_CACHE_DIR"] = uv_cache
    # Destructive mode by configuration too (craft_application/commands/lifecycle.py,
    # _BaseLifecycleCommand._use_provider reads the `build_environment` config item).
    os.environ["CRAFT_BUILD_ENVIRONMENT"] = "host"
    for name in (
        # Managed mode would mean "already inside an LXD/multipass instance".
        "CHARMCRAFT_MANAGED_MODE",
        "CRAFT_MANAGED_MODE",
        # A snap environment makes craft-application ask snapd for its config.
        "SNAP",
        "SNAP_NAME",
        "SNAP_INSTANCE_NAME",
        # Nothing from the caller's Python or uv setup may leak into the charm's venv.
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "UV_PROJECT_ENVIRONMENT",
        "UV_PYTHON",
        "UV_CONFIG_FILE",
        "UV_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
    ):
        os.environ.pop(name, None)


def patch_charmcraft() -> None:
    """Bypass the host checks that do not apply to this build (dev-environment.md)."""
    import craft_application.services.lifecycle as app_lifecycle
    import craft_application.services.provider as app_provider
    import craft_parts.executor.executor as parts_executor
    import craft_parts.packages as parts_packages
    import craft_parts.packages.snaps as parts_snaps
    from craft_parts.packages.base import DummyRepository

    # craft_application/services/lifecycle.py, LifecycleService._validate_build_plan: raises
    # IncompatibleBaseError unless the build base (ubuntu@24.04) equals the host's distro
    # (Debian here). charmcraft's LifecycleService (charmcraft/services/lifecycle.py)
    # inherits it unchanged. The venv's Python version is what must match the base, and
    # find_python() checks that instead.
    app_lifecycle.LifecycleService._validate_build_plan = lambda self: None  # type: ignore[method-assign]

    # craft_parts/packages/__init__.py, _get_repository_for_platform: returns the apt-backed
    # `Ubuntu` repository on any deb-based host (needs python-apt and root). This charm has
    # no build- or stage-packages and uv installs wheels from uv.lock, so the no-op
    # DummyRepository (craft_parts/packages/base.py) is right. `Repository` is a proxy that
    # calls this function on every attribute access.
    parts_packages._get_repository_for_platform = lambda: DummyRepository

    # craft_parts/executor/executor.py, Executor._install_build_snaps: would `snap install`
    # the part's build-snaps (astral-uv). There is no snapd; uv is on PATH instead.
    parts_executor.Executor._install_build_snaps = lambda self: None  # type: ignore[method-assign]

    def refuse(what: str):
        def _refuse(*_args: object, **_kwargs: object) -> None:
            raise RuntimeError(f"pack_charm: charmcraft tried {what} in destructive mode")

        return _refuse

    # craft_parts/packages/snaps.py, install_snaps; and the provider entry points of
    # craft_application/services/provider.py, ProviderService (LXD or multipass instances).
    parts_snaps.install_snaps = refuse("to install snaps")
    for method in ("get_provider", "instance", "run_managed"):
        setattr(app_provider.ProviderService, method, refuse(f"ProviderService.{method}"))


def run_charmcraft(source: pathlib.Path, output: pathlib.Path) -> int:
    """`charmcraft pack --destructive-mode` in this process, with the patches applied."""
    patch_charmcraft()
    from charmcraft.application.main import main as charmcraft_main

    # charmcraft refuses to write a package outside the project tree ("Cannot create
    # packages outside of the project tree"): pack into the copy, then move it out.
    dist = source / ".pack-output"
    dist.mkdir()
    os.chdir(source)
    sys.argv = [
        "charmcraft",
        "pack",
        "--destructive-mode",
        "--verbosity=quiet",
        f"--project-dir={source}",
        f"--output={dist}",
    ]
    rc = int(charmcraft_main() or 0)
    # (charmcraft 4.5 writes it one level further down, in dist/.pack-output/.)
    for charm in dist.rglob("*.charm") if rc == 0 else ():
        shutil.move(charm, output / charm.name)
    return rc


def print_log_tail(scratch: pathlib.Path, lines: int = 60) -> None:
    """The end of charmcraft's log, for a failed pack."""
    logs = sorted((scratch / "home").rglob("charmcraft*.log"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return
    tail = logs[-1].read_text(errors="replace").splitlines()[-lines:]
    print(f"pack_charm: last {lines} lines of {logs[-1]}:", file=sys.stderr)
    print("\n".join(tail), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
