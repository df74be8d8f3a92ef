"""Measures request latency as the official E2B Python SDK sees it, against a running server.

Three figures, each over N runs (default 20), reported as p50 / p90 / min / max in ms:

* `Sandbox.create()`: one call = one REST create that returns once the sandbox's agent
  answers and is initialised: a restore of the `base` template's ready snapshot (a cold
  boot for a create that comes before the server has built `base`, e.g. the first one on a
  fresh data dir). Each sandbox is killed right after its create is timed, outside the
  timed region, so runs do not pile up VMs. Measured twice: back to back (the next create
  right after the kill, so each create may wait for the standby VM the server is still
  preparing for it), and spaced (`--gap-ms`, default 1000, of untimed idle before each
  create, as between the creates of a user who does something with each sandbox).
* `sandbox.commands.run("true")`: one Connect server-stream `process.Process/Start` through
  the gateway, from the request until the end event. All runs use one sandbox, after one
  untimed warm-up run (the first call also opens the HTTP connection pool).

It never starts a server: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY must point at one,
e.g.

    scripts/with-server.sh .venv-compat/bin/python compat/bench_latency.py [--runs 20]

The machine's other load (other VMs booting) shows up in the figures; say what it was
when quoting them.
"""

import argparse
import json
import statistics
import sys
import time

from e2b import Sandbox

REQUEST_TIMEOUT_S = 60
SANDBOX_LIFETIME_S = 300


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(name: str, samples_s: list[float]) -> dict:
    ms = [s * 1000 for s in samples_s]
    return {
        "what": name,
        "runs": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "min_ms": round(min(ms), 1),
        "max_ms": round(max(ms), 1),
    }


def bench_create(runs: int, gap_s: float) -> list[float]:
    samples = []
    for _ in range(runs):
        time.sleep(gap_s)
        start = time.perf_counter()
        sbx = Sandbox.create(timeout=SANDBOX_LIFETIME_S, request_timeout=REQUEST_TIMEOUT_S)
        samples.append(time.perf_counter() - start)
        sbx.kill(request_timeout=REQUEST_TIMEOUT_S)
    return samples


def bench_run_true(runs: int) -> list[float]:
    sbx = Sandbox.create(timeout=SANDBOX_LIFETIME_S, request_timeout=REQUEST_TIMEOUT_S)
    try:
        result = sbx.commands.run("true", request_timeout=REQUEST_TIMEOUT_S)
        if result.exit_code != 0:
            raise SystemExit(f"warm-up `true` exited with {result.exit_code}")
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            result = sbx.commands.run("true", request_timeout=REQUEST_TIMEOUT_S)
            samples.append(time.perf_counter() - start)
            if result.exit_code != 0:
                raise SystemExit(f"`true` exited with {result.exit_code}")
        return samples
    finally:
        sbx.kill(request_timeout=REQUEST_TIMEOUT_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--gap-ms", type=int, default=1000)
    args = parser.parse_args()
    results = [
        summary("Sandbox.create()", bench_create(args.runs, 0)),
        summary(
            f"Sandbox.create(), {args.gap_ms} ms apart",
            bench_create(args.runs, args.gap_ms / 1000),
        ),
        summary('sandbox.commands.run("true")', bench_run_true(args.runs)),
    ]
    for r in results:
        print(
            f"{r['what']:<40} runs={r['runs']} p50={r['p50_ms']} ms p90={r['p90_ms']} ms "
            f"min={r['min_ms']} ms max={r['max_ms']} ms"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
