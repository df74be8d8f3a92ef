"""Helpers shared by the compatibility test modules: suite defaults, sandbox creation
with guaranteed teardown, and polling with deadlines (the VMs run under emulation, so
anything asynchronous is awaited by polling rather than by fixed sleeps)."""

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TypeVar

import pytest

from e2b import Sandbox

# Sandbox lifetime on the server (seconds): long enough for any module of this suite.
SANDBOX_LIFETIME_S = 600
# Per-request HTTP timeout for control-plane calls (create boots a VM) and envd calls.
REQUEST_TIMEOUT_S = 60
# Template to boot; unset means the SDK default ("base").
TEMPLATE = os.environ.get("WARREN_COMPAT_TEMPLATE") or None

T = TypeVar("T")


def create_sandbox(**kwargs) -> Sandbox:
    """Sandbox.create with this suite's defaults; keyword arguments override them."""
    opts: dict = dict(timeout=SANDBOX_LIFETIME_S, request_timeout=REQUEST_TIMEOUT_S)
    if TEMPLATE is not None:
        opts["template"] = TEMPLATE
    opts.update(kwargs)
    return Sandbox.create(**opts)


def kill_quietly(sbx: Optional[Sandbox]) -> None:
    """Teardown helper: kills a sandbox and ignores errors (the test already reported)."""
    if sbx is None:
        return
    try:
        sbx.kill(request_timeout=REQUEST_TIMEOUT_S)
    except Exception:
        pass


@contextmanager
def sandbox(**kwargs) -> Iterator[Sandbox]:
    """A sandbox that is killed when the block ends, whatever happens inside."""
    sbx = create_sandbox(**kwargs)
    try:
        yield sbx
    finally:
        kill_quietly(sbx)


def wait_for(
    what: str,
    probe: Callable[[], T],
    timeout_s: float = 20.0,
    interval_s: float = 0.1,
) -> T:
    """Polls `probe` until it returns something truthy and returns that; fails after
    `timeout_s` with the last value or exception, so slow paths show what they saw."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as e:  # the probe may fail until the state is reached
            last = e
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}; last: {last!r}")
        time.sleep(interval_s)
