#!/usr/bin/env bash
# Warren's main job on a fresh Debian bookworm machine (as root): installs what is needed,
# builds Warren and the guest image (cached), starts `warren serve`, and shows a live
# snapshot: a Python process counting in memory is snapshotted, and three sandboxes started
# from the snapshot carry on counting from where it was, independently.
#
# The server keeps running afterwards (its address and API key are printed); stop it with
# `kill $(cat /tmp/warren-demo/server.pid)`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

scripts/install-deps.sh
command -v cargo >/dev/null || { echo "cargo is required (Rust 1.85 or newer)" >&2; exit 1; }
cargo build --release --quiet -p warren -p warren-agent
warren="$repo/target/release/warren"
export WARREN_AGENT_BIN="$repo/target/release/warren-agent"

"$warren" image build

demo=/tmp/warren-demo
mkdir -p "$demo"
if [ -f "$demo/server.pid" ] && kill -0 "$(cat "$demo/server.pid")" 2>/dev/null; then
  kill "$(cat "$demo/server.pid")"; sleep 1
fi
export WARREN_API_KEY="${WARREN_API_KEY:-wrn_demo_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export WARREN_API_URL=http://127.0.0.1:3000
"$warren" serve --listen 127.0.0.1:3000 --data-dir "$demo/data" >"$demo/server.log" 2>&1 &
echo $! >"$demo/server.pid"
for _ in $(seq 1 600); do
  curl -fsS -o /dev/null -H "X-API-KEY: $WARREN_API_KEY" "$WARREN_API_URL/v2/sandboxes" 2>/dev/null && break
  sleep 0.5
done

echo "== creating a sandbox"
sb=$("$warren" sandbox create --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxID"])')
echo "sandbox $sb"
"$warren" sandbox exec "$sb" -- bash -c \
  'nohup python3 -c "
import time
n = 0
while True:
    n += 1
    open(\"/tmp/count\", \"w\").write(str(n))
    time.sleep(0.1)
" >/dev/null 2>&1 &'
sleep 2
echo "counter in the source: $("$warren" sandbox exec "$sb" -- cat /tmp/count)"

echo "== taking a live snapshot (the source keeps running)"
snap=$("$warren" snapshot create "$sb" --name demo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshotID"])')
echo "snapshot $snap"

echo "== starting three sandboxes from it"
for i in 1 2 3; do
  clone=$("$warren" sandbox create --from "$snap" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["sandboxID"])')
  echo "clone $clone: counter $("$warren" sandbox exec "$clone" -- cat /tmp/count)"
done
sleep 1
echo "source counter now: $("$warren" sandbox exec "$sb" -- cat /tmp/count)"
"$warren" sandbox list
echo
echo "Warren is serving on $WARREN_API_URL"
echo "  export E2B_API_URL=$WARREN_API_URL E2B_SANDBOX_URL=$WARREN_API_URL E2B_API_KEY=$WARREN_API_KEY"
