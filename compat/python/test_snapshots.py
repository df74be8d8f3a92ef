"""Live snapshots, pause/resume and fork through the unmodified SDK.

The source sandbox runs a Python process that keeps a counter in memory and publishes it
to a file every 0.2 s. A memory snapshot must carry that process along: in a sandbox
created from the snapshot the counter continues from (at least) the value it had when the
snapshot was taken, instead of restarting or standing still. Clones must also be
independent machines: their own disks, their own randomness, and a clock set to now.
"""

import shlex
import time
import uuid

import pytest

from e2b import Sandbox, SandboxException, SandboxQuery, SandboxState, SnapshotInfo

from helpers import REQUEST_TIMEOUT_S, create_sandbox, kill_quietly, wait_for

COUNTER_FILE = "/tmp/compat-counter"
COUNTER_PY = f"""
import os, time
i = 0
while True:
    i += 1
    with open({COUNTER_FILE!r} + '.tmp', 'w') as f:
        f.write(str(i))
    os.replace({COUNTER_FILE!r} + '.tmp', {COUNTER_FILE!r})
    time.sleep(0.2)
"""
BEFORE_FILE = "/home/user/before-snapshot.txt"
ENTROPY_CMD = "cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -x | head -1"


def read_counter(sbx: Sandbox) -> int:
    return int(sbx.files.read(COUNTER_FILE).strip())


def wait_counter_above(sbx: Sandbox, value: int, what: str) -> int:
    """Waits until the sandbox's counter exceeds `value`; returns the new value."""
    return wait_for(what, lambda: (c := read_counter(sbx)) > value and c, timeout_s=20)


def pids(sbx: Sandbox) -> set:
    return {p.pid for p in sbx.commands.list()}


def delete_quietly(snapshot_id: str) -> None:
    try:
        Sandbox.delete_snapshot(snapshot_id, request_timeout=REQUEST_TIMEOUT_S)
    except Exception:
        pass


def all_snapshots(**kwargs) -> list:
    pager = Sandbox.list_snapshots(request_timeout=REQUEST_TIMEOUT_S, **kwargs)
    items: list = []
    while pager.has_next and len(items) < 10_000:
        items.extend(pager.next_items())
    return items


def from_snapshot(snapshot_id: str, **kwargs) -> Sandbox:
    return create_sandbox(template=snapshot_id, **kwargs)


@pytest.fixture(scope="module")
def source(run_tag):
    """A running sandbox with the counter process; yields (sandbox, counter pid)."""
    s = create_sandbox(metadata={"suite": run_tag, "module": "snapshots"})
    try:
        s.files.write(BEFORE_FILE, "written before the snapshot")
        h = s.commands.run(f"python3 -c {shlex.quote(COUNTER_PY)}", background=True)
        h.disconnect()
        wait_for("the counter to reach 5", lambda: read_counter(s) >= 5, timeout_s=30)
        yield s, h.pid
    finally:
        kill_quietly(s)


@pytest.fixture(scope="module")
def snapshot(source):
    """A snapshot of the source; yields (SnapshotInfo, counter value read just before)."""
    sbx, _ = source
    before = read_counter(sbx)
    info = sbx.create_snapshot()
    try:
        yield info, before
    finally:
        delete_quietly(info.snapshot_id)


@pytest.fixture(scope="module")
def clones(snapshot):
    """Two sibling sandboxes created from the same snapshot."""
    info, _ = snapshot
    a = b = None
    try:
        a = from_snapshot(info.snapshot_id)
        b = from_snapshot(info.snapshot_id)
        yield a, b
    finally:
        kill_quietly(a)
        kill_quietly(b)


def test_create_snapshot_returns_info_and_source_keeps_running(source, snapshot):
    sbx, pid = source
    info, before = snapshot
    assert isinstance(info, SnapshotInfo)
    assert isinstance(info.snapshot_id, str) and info.snapshot_id
    assert isinstance(info.names, list)
    assert sbx.get_info().state == SandboxState.RUNNING
    assert pid in pids(sbx)
    wait_counter_above(sbx, before, "the source's counter to advance after the snapshot")


def test_clone_continues_process_from_snapshot_value(source, snapshot, clones):
    _, pid = source
    _, before = snapshot
    for clone in clones:
        first = read_counter(clone)
        assert first >= before, f"counter restarted in the clone: {first} < {before}"
        wait_counter_above(clone, first, "the clone's counter to advance")
        assert pid in pids(clone), "the counter process is not known to the clone's envd"


def test_file_written_before_snapshot_present_in_clone(clones):
    for clone in clones:
        assert clone.files.read(BEFORE_FILE) == "written before the snapshot"


def test_writes_are_isolated_between_source_and_clones(source, clones):
    sbx, _ = source
    a, b = clones
    a.files.write("/home/user/only-in-a.txt", "a")
    sbx.files.write("/home/user/only-in-source.txt", "s")
    assert a.files.read("/home/user/only-in-a.txt") == "a"
    assert sbx.files.exists("/home/user/only-in-a.txt") is False
    assert b.files.exists("/home/user/only-in-a.txt") is False
    assert a.files.exists("/home/user/only-in-source.txt") is False
    assert b.files.exists("/home/user/only-in-source.txt") is False
    # Overwriting a file that existed at snapshot time stays private too.
    b.files.write(BEFORE_FILE, "changed in b")
    assert a.files.read(BEFORE_FILE) == "written before the snapshot"
    assert sbx.files.read(BEFORE_FILE) == "written before the snapshot"


def test_siblings_have_independent_randomness(source, clones):
    sbx, _ = source
    outputs = [s.commands.run(ENTROPY_CMD).stdout.splitlines() for s in (sbx, *clones)]
    uuids = [o[0] for o in outputs]
    randoms = [o[1] for o in outputs]
    assert len(set(uuids)) == 3, f"kernel uuids repeat across clones: {uuids}"
    assert len(set(randoms)) == 3, f"/dev/urandom repeats across clones: {randoms}"


def test_clone_clock_is_current(clones):
    for clone in clones:
        before = time.time()
        guest = float(clone.commands.run("date +%s.%N").stdout.strip())
        after = time.time()
        # Within a second of the host's clock, not the snapshot's time.
        assert before - 1 <= guest <= after + 1, (before, guest, after)


def test_list_snapshots_filters_by_sandbox(source, snapshot, clones):
    sbx, _ = source
    info, _ = snapshot
    a, _ = clones
    of_clone = a.create_snapshot()
    try:
        of_source = {s.snapshot_id for s in all_snapshots(sandbox_id=sbx.sandbox_id)}
        assert info.snapshot_id in of_source
        assert of_clone.snapshot_id not in of_source
        assert {s.snapshot_id for s in sbx.list_snapshots().next_items()} >= {info.snapshot_id}
        of_a = {s.snapshot_id for s in all_snapshots(sandbox_id=a.sandbox_id)}
        assert of_a == {of_clone.snapshot_id}
        everything = {s.snapshot_id for s in all_snapshots()}
        assert {info.snapshot_id, of_clone.snapshot_id} <= everything
    finally:
        delete_quietly(of_clone.snapshot_id)


def test_list_snapshots_pagination(source, snapshot):
    sbx, _ = source
    extra = sbx.create_snapshot()
    try:
        pager = Sandbox.list_snapshots(sandbox_id=sbx.sandbox_id, limit=1)
        seen: list = []
        for _ in range(20):
            if not pager.has_next:
                break
            page = pager.next_items()
            assert len(page) <= 1
            seen.extend(s.snapshot_id for s in page)
        assert not pager.has_next
        assert len(seen) == len(set(seen))
        assert {snapshot[0].snapshot_id, extra.snapshot_id} <= set(seen)
    finally:
        delete_quietly(extra.snapshot_id)


def test_named_snapshot_and_delete(source):
    sbx, _ = source
    name = f"compat-{uuid.uuid4().hex[:10]}"
    info = sbx.create_snapshot(name=name)
    try:
        assert name in info.snapshot_id or any(name in n for n in info.names), info
        by_name = {s.snapshot_id for s in all_snapshots(name=name)}
        assert info.snapshot_id in by_name
        assert Sandbox.delete_snapshot(info.snapshot_id) is True
        assert Sandbox.delete_snapshot(info.snapshot_id) is False
        assert info.snapshot_id not in {s.snapshot_id for s in all_snapshots()}
        created = None
        try:
            with pytest.raises(SandboxException):
                created = from_snapshot(info.snapshot_id)
        finally:
            kill_quietly(created)
    finally:
        delete_quietly(info.snapshot_id)


def test_snapshot_outlives_its_sandbox(run_tag):
    src = clone = None
    info = None
    try:
        src = create_sandbox(metadata={"suite": run_tag, "module": "snapshot-outlives"})
        src.files.write("/home/user/kept.txt", "kept")
        info = src.create_snapshot()
        assert src.kill() is True
        src = None
        clone = from_snapshot(info.snapshot_id)
        assert clone.files.read("/home/user/kept.txt") == "kept"
    finally:
        kill_quietly(src)
        kill_quietly(clone)
        if info is not None:
            delete_quietly(info.snapshot_id)


def test_pause_then_connect_resumes_with_state(source, run_tag):
    sbx, pid = source
    sbx.files.write("/home/user/before-pause.txt", "paused")
    before = read_counter(sbx)
    try:
        assert sbx.pause() is True
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        assert sbx.pause() is False
        query = SandboxQuery(metadata={"suite": run_tag}, state=[SandboxState.PAUSED])
        paused = Sandbox.list(query=query).next_items()
        assert sbx.sandbox_id in {s.sandbox_id for s in paused}

        resumed = Sandbox.connect(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT_S)
        assert resumed.sandbox_id == sbx.sandbox_id
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.RUNNING
        first = read_counter(resumed)
        assert first >= before, f"counter restarted after resume: {first} < {before}"
        wait_counter_above(resumed, first, "the counter to advance after resume")
        assert pid in pids(resumed)
        assert resumed.files.read("/home/user/before-pause.txt") == "paused"
    finally:
        try:
            Sandbox.connect(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT_S)
        except Exception:
            pass


def test_fork_copies_running_state(source):
    sbx, pid = source
    before = read_counter(sbx)
    forks = sbx.fork(count=2, request_timeout=REQUEST_TIMEOUT_S)
    live = [f for f in forks if isinstance(f, Sandbox)]
    try:
        assert len(forks) == 2
        assert len(live) == 2, f"forks failed: {[f for f in forks if not isinstance(f, Sandbox)]}"
        assert len({f.sandbox_id for f in live} | {sbx.sandbox_id}) == 3
        for f in live:
            assert read_counter(f) >= before
            wait_counter_above(f, read_counter(f), "a fork's counter to advance")
            assert pid in pids(f)
            assert f.files.read(BEFORE_FILE) == "written before the snapshot"
        uuids = {f.commands.run(ENTROPY_CMD).stdout for f in live}
        assert len(uuids) == 2
        # The source keeps running with its own id.
        assert sbx.get_info().state == SandboxState.RUNNING
    finally:
        for f in live:
            kill_quietly(f)
