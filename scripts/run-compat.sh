#!/usr/bin/env bash
# Runs the E2B SDK compatibility suites (compat/python with pytest, compat/js with node's
# test runner) against an already running server. It does not start one: E2B_API_URL,
# E2B_SANDBOX_URL and E2B_API_KEY must point at it (scripts/with-server.sh sets them).
#
#   WARREN_COMPAT_SNAPSHOTS=1   also run the snapshot files (test_snapshots.py,
#                               snapshots.test.mjs); default 0 leaves them out
#   WARREN_COMPAT_SUITES=...    "python js" (default), "python" or "js"
#   WARREN_COMPAT_TEMPLATE=...  template to boot (default: the SDK default, "base")
#   extra arguments are passed to pytest (e.g. -k pty)
#
# Both suites always run; the exit status is non-zero if either failed, including pytest's
# exit code 5 (no tests collected).
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo" || exit 2

for v in E2B_API_URL E2B_SANDBOX_URL E2B_API_KEY; do
    if [[ -z "${!v:-}" ]]; then
        echo "run-compat: $v is not set (start a server, e.g. scripts/with-server.sh $0)" >&2
        exit 2
    fi
done

scripts/compat-setup.sh || exit 1

snapshots="${WARREN_COMPAT_SNAPSHOTS:-0}"
suites="${WARREN_COMPAT_SUITES:-python js}"
failed=()

if [[ " $suites " == *" python "* ]]; then
    echo "==> compat/python (pytest, e2b $(.venv-compat/bin/python -c \
        'from importlib.metadata import version; print(version("e2b"))'))"
    py_args=(compat/python)
    [[ "$snapshots" == 1 ]] || py_args+=(--ignore=compat/python/test_snapshots.py)
    .venv-compat/bin/python -m pytest "${py_args[@]}" "$@"
    rc=$?
    # 5 = no tests collected: a suite that ran nothing has not passed.
    [[ $rc -eq 0 ]] || failed+=("python (pytest exit $rc)")
fi

if [[ " $suites " == *" js "* ]]; then
    echo "==> compat/js (node --test, e2b $(node -p \
        "require('./compat/js/node_modules/e2b/package.json').version"))"
    js_files=()
    for f in compat/js/*.test.mjs; do
        [[ "$snapshots" != 1 && "$(basename "$f")" == snapshots.test.mjs ]] && continue
        js_files+=("$f")
    done
    if [[ ${#js_files[@]} -eq 0 ]]; then
        failed+=("js (no test files)")
    else
        node --test --test-concurrency=1 "${js_files[@]}"
        rc=$?
        [[ $rc -eq 0 ]] || failed+=("js (node --test exit $rc)")
    fi
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "run-compat: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "run-compat: all compatibility suites passed (snapshots: $snapshots)"
