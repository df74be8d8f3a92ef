#!/usr/bin/env bash
# Installs what the E2B compatibility suites need, idempotently:
#   <repo>/.venv-compat  Python venv with the pinned e2b SDK, pytest, pytest-timeout
#   compat/js/node_modules  the pinned e2b JS SDK (from compat/js/package-lock.json)
# Reuses what is already installed at the right versions; prints little; exits non-zero
# with the failing step's output on any error.
set -euo pipefail

E2B_PY_VERSION="2.63.0"
E2B_JS_VERSION="2.51.0"
PY_REQS=("e2b==${E2B_PY_VERSION}" "pytest" "pytest-timeout")

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${repo}/.venv-compat"
js_dir="${repo}/compat/js"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Runs a step quietly; on failure shows its output and stops.
step() {
    local what="$1"
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "compat-setup: FAILED: ${what}" >&2
        cat "$log" >&2
        exit 1
    fi
}

python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "compat-setup: $python not found" >&2; exit 1; }
command -v node >/dev/null || { echo "compat-setup: node not found" >&2; exit 1; }
command -v npm >/dev/null || { echo "compat-setup: npm not found" >&2; exit 1; }

# --- Python ---------------------------------------------------------------------------
py_ok() {
    [[ -x "${venv}/bin/python" ]] || return 1
    "${venv}/bin/python" - "$E2B_PY_VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("e2b") == sys.argv[1]
version("pytest")
version("pytest-timeout")
PY
}

if ! py_ok; then
    # A venv whose interpreter does not start (e.g. copied from another machine) is rebuilt.
    if ! "${venv}/bin/python" -c 'import sys' >/dev/null 2>&1; then
        step "create venv ${venv}" "$python" -m venv --clear "$venv"
    fi
    step "pip install ${PY_REQS[*]}" \
        "${venv}/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_REQS[@]}"
    py_ok || { echo "compat-setup: venv check failed after install" >&2; exit 1; }
    echo "compat-setup: python venv ready (${venv}, e2b ${E2B_PY_VERSION})"
fi

# --- JS -------------------------------------------------------------------------------
js_ok() {
    local installed
    installed="$(node -p "require('${js_dir}/node_modules/e2b/package.json').version" \
        2>/dev/null)" || return 1
    [[ "$installed" == "$E2B_JS_VERSION" ]] || return 1
    # node_modules must be at least as new as the lock file it was installed from.
    [[ ! "${js_dir}/package-lock.json" -nt "${js_dir}/node_modules/.package-lock.json" ]]
}

if ! js_ok; then
    cd "$js_dir"
    if [[ -f package-lock.json ]]; then
        step "npm ci in compat/js" npm ci --no-audit --no-fund --loglevel=error
    else
        step "npm install in compat/js" npm install --no-audit --no-fund --loglevel=error
    fi
    js_ok || { echo "compat-setup: e2b ${E2B_JS_VERSION} missing after npm" >&2; exit 1; }
    echo "compat-setup: js deps ready (compat/js/node_modules, e2b ${E2B_JS_VERSION})"
fi
