"""Session-wide fixtures of the E2B Python SDK compatibility suite.

The suite never starts a server: it reads E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY
from the environment (the SDK reads them too) and checks once per session that both URLs
accept TCP connections, so that a missing server ends the run at once with a clear message
instead of one slow failure per test.
"""

import os
import socket
import uuid
from typing import Optional
from urllib.parse import urlsplit

import pytest

REQUIRED_ENV = ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")


def _probe(name: str) -> Optional[str]:
    """Returns why the URL in env var `name` cannot be reached, or None if it can."""
    url = os.environ[name]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name}={url!r} is not an http(s) URL"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=5):
            return None
    except OSError as e:
        return f"cannot connect to {name}={url} ({e})"


@pytest.fixture(scope="session", autouse=True)
def server_reachable() -> None:
    """Stops the whole run early when the environment points at no server."""
    missing = [n for n in REQUIRED_ENV if not os.environ.get(n)]
    if missing:
        pytest.exit(f"compat: set {', '.join(missing)} (a running Warren server)", returncode=3)
    for name in ("E2B_API_URL", "E2B_SANDBOX_URL"):
        problem = _probe(name)
        if problem:
            pytest.exit(f"compat: {problem}; is `warren serve` running?", returncode=3)


@pytest.fixture(scope="session")
def run_tag() -> str:
    """A value unique to this run, put into sandbox metadata to find our own sandboxes."""
    return f"run-{uuid.uuid4().hex[:12]}"
