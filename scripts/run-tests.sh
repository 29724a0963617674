#!/usr/bin/env bash
# The project's test command: `bash scripts/run-tests.sh` (CI runs it through .ci/run).
#
# Installs everything the tests need from the project's own files (uv.lock, the pinned
# charmcraft below), then runs lint, type checks and the unit tests, packs the charm for real
# (scripts/pack_charm.py) and tests the packed artifact (tests/artifact), stopping at the first
# failure. Idempotent: on a warm machine the setup steps take well under a second.
# Works as root or not, on a machine with only pyenv Pythons and pip.
# Integration tests (tests/integration) need Juju + Kubernetes and are not run here.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TOOLS="$ROOT/.tools"              # gitignored, per checkout
CHARMCRAFT_VERSION=4.5.0
exec </dev/null                   # CI has no stdin: no tool may wait for input
unset VIRTUAL_ENV                 # an activated venv would only make uv warn
export UV_PYTHON_DOWNLOADS=never  # uv cannot download interpreters here; we pass one
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# ---- step runner: timings per step, and the failed step named on exit ------------------
TIMINGS=()
CURRENT=""
STEP_T0=0
now_us() { local t=${EPOCHREALTIME:-$(date +%s).000000}; NOW=${t/[.,]/}; }
record() {  # append "<step> <seconds>" for the current step
  now_us
  local us=$((NOW - STEP_T0))
  TIMINGS+=("$(printf '  %-18s %4d.%01ds' "$CURRENT" $((us / 1000000)) $((us % 1000000 / 100000)))")
}
step() {  # step NAME CMD...: run CMD in this shell (so it can set variables), timed
  CURRENT=$1
  shift
  echo "==> $CURRENT"
  now_us
  STEP_T0=$NOW
  "$@"
  record
  CURRENT=""
}
on_exit() {
  local rc=$?
  [[ -z $CURRENT ]] || record
  echo "==> timings"
  printf '%s\n' "${TIMINGS[@]}"
  if [[ -n $CURRENT ]]; then echo "FAILED: $CURRENT (exit $rc)"; else echo "All steps passed."; fi
}
trap on_exit EXIT

# ---- setup steps ---------------------------------------------------------------------------
pick_python() {  # PY: pyenv's highest 3.12 (the charm's ubuntu@24.04 Python), else any >= 3.10
  local root c candidates=()
  root=${PYENV_ROOT:-$(pyenv root 2>/dev/null || echo "${HOME:-}/.pyenv")}
  mapfile -t candidates < <(
    printf '%s\n' "$root"/versions/3.12.*/bin/python | sort -rV
    echo python3.12
    printf '%s\n' "$root"/versions/3.1[0-9]*/bin/python | sort -rV
    printf '%s\n' python3.13 python3.11 python3.10 python3
  )
  for c in "${candidates[@]}"; do
    # Runs it rather than testing -x: pyenv shims exist even for versions not selected.
    if "$c" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      PY=$("$c" -c 'import sys; print(sys.executable)')
      echo "$PY ($("$PY" --version))"
      return
    fi
  done
  echo "No Python >= 3.10 found: install 3.12 with pyenv." >&2
  return 1
}

ensure_uv() {  # uv on PATH; else pip-install it for this user (or, failing that, into .tools)
  if ! command uv --version >/dev/null 2>&1; then
    PATH="$("$PY" -m site --user-base)/bin:$TOOLS/uv/bin:$PATH"
    if ! command uv --version >/dev/null 2>&1; then
      # --user fails on a PEP 668 "externally managed" Python or a read-only HOME.
      "$PY" -m pip install --user --quiet uv || {
        echo "pip --user refused (see above): installing uv into $TOOLS/uv instead"
        "$PY" -m venv "$TOOLS/uv" && "$TOOLS/uv/bin/pip" install --quiet uv
      }
    fi
  fi
  UV=$(type -P uv)
  # A pyenv shim costs 0.1 s per call: call the binary behind it.
  if [[ $UV == */shims/uv ]]; then UV=$(pyenv which uv 2>/dev/null) || UV=$(type -P uv); fi
  uv --version
}
uv() { "${UV:?ensure_uv first}" "$@"; }

ensure_charmcraft() {  # its own venv: its dependencies conflict with the charm's
  local venv="$TOOLS/charmcraft"
  local stamp="$venv/.installed-$CHARMCRAFT_VERSION"  # written last: a cut install redoes
  mkdir -p "$TOOLS"
  if command -v flock >/dev/null; then  # parallel runs in one checkout must not both build it
    exec 9>"$TOOLS/.lock"
    flock 9
  fi
  if [[ ! -f $stamp || ! -x $venv/bin/python ]]; then
    rm -rf "$venv"
    uv venv --quiet --python "$PY" "$venv"
    uv pip install --quiet --compile-bytecode --python "$venv/bin/python" \
      "charmcraft==$CHARMCRAFT_VERSION"
    touch "$stamp"
  fi
  exec 9>&-
  export CHARMCRAFT_PYTHON="$venv/bin/python"  # for tests/unit/test_charmcraft_schema.py
  echo "charmcraft $CHARMCRAFT_VERSION: $CHARMCRAFT_PYTHON"
}

# HOOK: system packages the tests need. Keep each idempotent and cheap when already installed
# (check before apt-get; sudo if not root).
APT_UPDATED=""
apt_install() {  # apt_install WHY PACKAGE...: Debian packages, as root or with password-less sudo
  local why=$1 sudo=()
  shift
  if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
      sudo=(sudo -n)
    else
      echo "$why is missing and installing it needs root (or password-less sudo):" >&2
      echo "  apt-get install -y --no-install-recommends $*" >&2
      return 1
    fi
  fi
  echo "$why not found: installing Debian's $*"
  if [[ -z $APT_UPDATED ]]; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

install_system_deps() {
  ensure_promtool
  ensure_ceph
  ensure_azurite
}

ensure_promtool() {
  # promtool (Debian package `prometheus`): tests/unit/test_alert_rules.py checks and unit-tests
  # src/prometheus_alert_rules with it. An explicit PROMTOOL wins; else PATH; else apt-get.
  # Installing never starts the Prometheus daemon where policy-rc.d forbids it (containers).
  local promtool=""
  if [[ -n ${PROMTOOL:-} ]]; then
    promtool=$(type -P "$PROMTOOL") || { echo "PROMTOOL=$PROMTOOL is not an executable" >&2; return 1; }
  else
    promtool=$(type -P promtool || true)
  fi
  if [[ -z $promtool ]]; then
    apt_install promtool prometheus
    promtool=$(type -P promtool || true)
  fi
  if [[ -z $promtool || ! -x $promtool ]]; then
    echo "promtool is not usable (${promtool:-not found}): the alert rule tests need it" >&2
    return 1
  fi
  export PROMTOOL=$promtool  # the alert rule tests skip only when promtool is absent
  echo "promtool: $PROMTOOL ($("$PROMTOOL" --version 2>&1 | head -n1))"
}

ensure_ceph() {
  # Ceph radosgw with one monitor and one memstore OSD (tests/backup/servers.py starts them):
  # the real S3 server the backup tests must pass against. About 61 MB from Debian.
  local binary missing=()
  for binary in radosgw ceph-mon ceph-osd radosgw-admin monmaptool; do
    command -v "$binary" >/dev/null || missing+=("$binary")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[*]}" radosgw ceph-mon ceph-osd
  fi
  echo "ceph: $(radosgw --version 2>&1 | head -n1)"
}

ensure_azurite() {
  # Azurite, Microsoft's Azure Storage emulator (npm), at the version tests/backup/package-lock.json
  # pins, in .tools/azurite; reinstalled only when the lock file changes.
  local dir="$TOOLS/azurite" lock="$ROOT/tests/backup/package-lock.json" stamp
  stamp="$dir/.installed-$(sha256sum "$lock" | cut -c1-16)"  # written last: a cut install redoes
  mkdir -p "$TOOLS"
  if command -v flock >/dev/null; then  # parallel runs in one checkout must not both install it
    exec 7>"$TOOLS/.azurite.lock"
    flock 7
  fi
  if [[ ! -f $stamp || ! -x $dir/node_modules/.bin/azurite-blob ]]; then
    command -v npm >/dev/null || apt_install npm npm
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$ROOT/tests/backup/package.json" "$lock" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
  fi
  exec 7>&-
  export AZURITE_DIR=$dir  # tests/backup/servers.py starts node_modules/.bin/azurite-blob from it
  echo "azurite: $(node -p "require('$dir/node_modules/azurite/package.json').version")"
}

run() { uv run --no-sync "$@"; }  # tools from the project venv made by `uv sync`

pack_charm() {  # KURRENTDB_CHARM: a real `charmcraft pack` (destructive mode, clean copy)
  local out="$ROOT/build/charm" charms
  mkdir -p "$out"
  if command -v flock >/dev/null; then  # held until the artifact tests are done with it
    exec 8>"$ROOT/build/.charm.lock"
    flock 8
  fi
  "$CHARMCRAFT_PYTHON" scripts/pack_charm.py --python "$PY" --uv "$UV" "$out"
  charms=("$out"/*.charm)
  [[ ${#charms[@]} -eq 1 && -f ${charms[0]} ]] || { echo "no single .charm in $out" >&2; return 1; }
  export KURRENTDB_CHARM=${charms[0]}  # tests/artifact fail (never skip) if it is missing
}

artifact_tests() {  # unzip the .charm, run hooks from it alone, charmcraft analyse
  run pytest tests/artifact -q -rs -p no:cacheprovider
  exec 8>&-
}

step "python" pick_python
step "uv" ensure_uv
step "uv sync" uv sync --frozen --python "$PY"
step "charmcraft" ensure_charmcraft
step "system deps" install_system_deps
# .tools is gitignored, but ruff only honours .gitignore inside a git work tree (CI may not be).
step "ruff check" run ruff check --extend-exclude .tools
step "ruff format" run ruff format --check --extend-exclude .tools
step "mypy" run mypy
# tests/backup starts radosgw, moto and Azurite (CI=true: a server that cannot start fails).
# Two workers, a test file each at a time: the simulations are CPU-bound and CI has 2 cores.
step "unit tests" run pytest tests/unit tests/sim tests/backup -q -n 2 --dist loadfile \
  --cov=src --cov-report=
# The fuzz suite alone in one process: its table of surfaces prints at the end of its run.
step "fuzz tests" run coverage run --append --source=src -m pytest tests/fuzz -q
step "coverage report" run coverage report
step "pack" pack_charm
step "artifact tests" artifact_tests
