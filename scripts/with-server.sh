#!/usr/bin/env bash
# Starts `warren serve` on a free loopback port with a throw-away data dir, exports the
# variables the e2b SDKs and the warren CLI read, runs the given command, then stops the
# server and checks that no QEMU process or sandbox directory was left behind.
#
#   scripts/with-server.sh COMMAND [ARGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
warren="${WARREN_BIN:-$repo/target/debug/warren}"
port="${WARREN_TEST_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}"
data_dir=$(mktemp -d /tmp/warren-test-data.XXXXXX)
log="$data_dir/server.log"
export WARREN_API_KEY="wrn_test_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

"$warren" serve --listen "127.0.0.1:$port" --data-dir "$data_dir" --on-exit kill \
    >"$log" 2>&1 &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if pgrep -f "qemu-system.*$data_dir" >/dev/null; then
    echo "error: QEMU processes of this server were left running" >&2
    pkill -KILL -f "qemu-system.*$data_dir" || true
    exit 1
  fi
  # Keep the server log of the last run for post-mortems; the data dir itself goes.
  cp "$log" "${WARREN_TEST_LOG_COPY:-/tmp/warren-test-last-server.log}" 2>/dev/null || true
  rm -rf "$data_dir"
}
trap cleanup EXIT

for _ in $(seq 1 600); do
  if curl -fsS -o /dev/null 2>/dev/null -H "X-API-KEY: $WARREN_API_KEY" "http://127.0.0.1:$port/v2/sandboxes"; then
    break
  fi
  kill -0 "$server" 2>/dev/null || { echo "warren serve exited:" >&2; cat "$log" >&2; exit 1; }
  sleep 0.5
done

export E2B_API_URL="http://127.0.0.1:$port" E2B_SANDBOX_URL="http://127.0.0.1:$port"
export E2B_API_KEY="$WARREN_API_KEY" WARREN_API_URL="http://127.0.0.1:$port"
status=0
"$@" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- last lines of the server log ($log) ---" >&2
  tail -n 60 "$log" >&2
fi
exit "$status"
