"""Sandbox lifecycle through the control-plane REST API: create with metadata and env vars,
get_info, set_timeout, list with metadata filters (including values that need escaping)
and pagination, metrics, connect by id, kill, and the error cases the SDK maps to its own
exceptions (unknown sandbox, killed sandbox, wrong API key)."""

import datetime
import uuid

import pytest
from packaging.version import Version

from e2b import (
    AuthenticationException,
    Sandbox,
    SandboxInfo,
    SandboxNotFoundException,
    SandboxNotRunningException,
    SandboxQuery,
    SandboxState,
)

from helpers import REQUEST_TIMEOUT_S, TEMPLATE, create_sandbox, kill_quietly, wait_for

# A metadata pair whose key and value need percent-encoding in the list query.
AWKWARD_KEY = "k y&z"
AWKWARD_VALUE = "v&x=1/ü %"

UNKNOWN_ID = "nosuchsandbox0000000"


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


@pytest.fixture(scope="module")
def metadata(run_tag):
    return {"suite": run_tag, "module": "sandbox", AWKWARD_KEY: AWKWARD_VALUE}


@pytest.fixture(scope="module")
def sbx(metadata):
    s = create_sandbox(metadata=metadata, envs={"COMPAT_ENV": "lifecycle"})
    try:
        yield s
    finally:
        kill_quietly(s)


def list_all(query: SandboxQuery, limit=None) -> list:
    """Every page of Sandbox.list for `query`, as a flat list."""
    pager = Sandbox.list(query=query, limit=limit, request_timeout=REQUEST_TIMEOUT_S)
    items: list = []
    for _ in range(100):
        if not pager.has_next:
            return items
        items.extend(pager.next_items())
    pytest.fail("Sandbox.list paginator did not end after 100 pages")


def test_create_returns_usable_sandbox(sbx):
    assert isinstance(sbx.sandbox_id, str) and sbx.sandbox_id
    # The id goes into hostnames and raw URL paths, so it must be DNS-label safe.
    assert sbx.sandbox_id.isalnum() and sbx.sandbox_id == sbx.sandbox_id.lower()
    assert sbx.is_running() is True
    assert sbx.commands.run("echo $COMPAT_ENV").stdout == "lifecycle\n"


def test_get_info_fields(sbx, metadata):
    info = sbx.get_info()
    assert isinstance(info, SandboxInfo)
    assert info.sandbox_id == sbx.sandbox_id
    assert isinstance(info.template_id, str) and info.template_id
    assert info.metadata == metadata
    assert info.state == SandboxState.RUNNING
    assert info.cpu_count >= 1
    assert info.memory_mb > 0
    assert Version(info.envd_version) >= Version("0.1.0")
    now = utcnow()
    assert info.started_at.tzinfo is not None
    assert info.started_at <= now + datetime.timedelta(seconds=5)
    assert now - info.started_at < datetime.timedelta(minutes=15)
    assert info.end_at > info.started_at
    # Same through the static variant.
    assert Sandbox.get_info(sbx.sandbox_id).sandbox_id == sbx.sandbox_id


def test_set_timeout_moves_end_at(sbx):
    sbx.set_timeout(900)
    end = sbx.get_info().end_at
    assert abs((end - utcnow()).total_seconds() - 900) < 60
    Sandbox.set_timeout(sbx.sandbox_id, 400)
    end = sbx.get_info().end_at
    assert abs((end - utcnow()).total_seconds() - 400) < 60


def test_list_filters_by_metadata(sbx, metadata, run_tag):
    found = list_all(SandboxQuery(metadata={"suite": run_tag, "module": "sandbox"}))
    assert sbx.sandbox_id in {s.sandbox_id for s in found}
    mine = next(s for s in found if s.sandbox_id == sbx.sandbox_id)
    assert mine.metadata == metadata
    assert mine.state == SandboxState.RUNNING

    # A key and value that need escaping must round-trip through the query.
    found = list_all(SandboxQuery(metadata={AWKWARD_KEY: AWKWARD_VALUE, "suite": run_tag}))
    assert sbx.sandbox_id in {s.sandbox_id for s in found}

    # All pairs must match: one wrong value excludes the sandbox.
    found = list_all(SandboxQuery(metadata={"suite": run_tag, AWKWARD_KEY: "v&x=1/ü"}))
    assert sbx.sandbox_id not in {s.sandbox_id for s in found}
    found = list_all(SandboxQuery(metadata={"suite": f"other-{uuid.uuid4().hex}"}))
    assert found == []


def test_list_state_filter(sbx, run_tag):
    running = list_all(SandboxQuery(metadata={"suite": run_tag}, state=[SandboxState.RUNNING]))
    assert sbx.sandbox_id in {s.sandbox_id for s in running}
    paused = list_all(SandboxQuery(metadata={"suite": run_tag}, state=[SandboxState.PAUSED]))
    assert sbx.sandbox_id not in {s.sandbox_id for s in paused}


def test_get_metrics(sbx):
    def metrics():
        return sbx.get_metrics()

    items = wait_for("a non-empty get_metrics()", metrics, timeout_s=30, interval_s=1)
    m = items[-1]
    assert m.cpu_count >= 1
    assert 0 <= m.cpu_used_pct <= 100 * m.cpu_count
    assert m.mem_total > 0 and 0 < m.mem_used <= m.mem_total
    assert m.disk_total > 0 and 0 < m.disk_used <= m.disk_total
    assert abs((utcnow() - m.timestamp).total_seconds()) < 600


def test_connect_by_id(sbx):
    other = Sandbox.connect(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT_S)
    assert other.sandbox_id == sbx.sandbox_id
    other.files.write("/tmp/via-connect.txt", "connected")
    assert sbx.files.read("/tmp/via-connect.txt") == "connected"
    assert other.commands.run("echo $COMPAT_ENV").stdout == "lifecycle\n"


def test_pagination_and_kill(run_tag):
    """Two more sandboxes with a shared tag: page through them one at a time, then kill
    one and check that the SDK sees it gone everywhere."""
    tag = {"suite": run_tag, "module": "pagination"}
    first = second = None
    try:
        first = create_sandbox(metadata=tag)
        second = create_sandbox(metadata=tag)
        ids = {first.sandbox_id, second.sandbox_id}
        assert len(ids) == 2

        pager = Sandbox.list(query=SandboxQuery(metadata=tag), limit=1)
        seen: list = []
        for _ in range(10):
            if not pager.has_next:
                break
            page = pager.next_items()
            assert len(page) <= 1
            seen.extend(s.sandbox_id for s in page)
        assert not pager.has_next
        assert sorted(seen) == sorted(ids)

        assert second.kill() is True
        assert second.kill() is False
        assert Sandbox.kill(second.sandbox_id) is False
        with pytest.raises(SandboxNotFoundException):
            Sandbox.get_info(second.sandbox_id)
        with pytest.raises(SandboxNotRunningException):
            second.commands.run("echo unreachable")
        with pytest.raises(SandboxNotRunningException):
            second.files.read("/etc/hostname")
        assert second.is_running() is False
        remaining = list_all(SandboxQuery(metadata=tag))
        assert [s.sandbox_id for s in remaining] == [first.sandbox_id]
    finally:
        kill_quietly(first)
        kill_quietly(second)


def test_unknown_sandbox_errors():
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(UNKNOWN_ID)
    assert Sandbox.kill(UNKNOWN_ID) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(UNKNOWN_ID)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout(UNKNOWN_ID, 60)
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_metrics(UNKNOWN_ID)


def test_wrong_api_key_rejected(sbx):
    bad = "e2b_" + "0" * 40
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=bad).next_items()
    with pytest.raises(AuthenticationException):
        Sandbox.get_info(sbx.sandbox_id, api_key=bad)
    created = None
    try:
        with pytest.raises(AuthenticationException):
            opts = {"template": TEMPLATE} if TEMPLATE else {}
            created = Sandbox.create(api_key=bad, request_timeout=REQUEST_TIMEOUT_S, **opts)
    finally:
        kill_quietly(created)
