"""Files through `sandbox.files` (envd /files HTTP and filesystem.Filesystem RPCs): write
and read of text and binary data, list with depth, exists, make_dir, rename, remove,
get_info, directory watching (sync polling watcher and async stream), and the pre-signed
upload/download URLs used by plain HTTP clients. One sandbox serves the whole module;
each test works in its own directory under /tmp."""

import asyncio
import datetime
import hashlib
import urllib.request
import uuid

import httpx
import pytest

from e2b import (
    AsyncSandbox,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
)

from helpers import REQUEST_TIMEOUT_S, create_sandbox, kill_quietly, wait_for

BINARY = bytes(range(256)) * 64 + b"\x00\xff\r\n\x1b"


@pytest.fixture(scope="module")
def sbx(run_tag):
    s = create_sandbox(metadata={"suite": run_tag, "module": "files"})
    try:
        yield s
    finally:
        kill_quietly(s)


@pytest.fixture
def d(sbx):
    """A fresh directory for one test."""
    path = f"/tmp/compat-{uuid.uuid4().hex[:8]}"
    assert sbx.files.make_dir(path) is True
    return path


def test_write_read_text(sbx, d):
    info = sbx.files.write(f"{d}/hello.txt", "hello ✓\nsecond line\n")
    assert info.name == "hello.txt"
    assert info.path == f"{d}/hello.txt"
    assert info.type == FileType.FILE
    assert sbx.files.read(f"{d}/hello.txt") == "hello ✓\nsecond line\n"
    # The file is the same one commands see.
    assert sbx.commands.run(f"cat {d}/hello.txt").stdout == "hello ✓\nsecond line\n"


def test_write_read_binary_round_trip(sbx, d):
    sbx.files.write(f"{d}/blob.bin", BINARY)
    got = sbx.files.read(f"{d}/blob.bin", format="bytes")
    assert bytes(got) == BINARY
    r = sbx.commands.run(f"sha256sum {d}/blob.bin")
    assert r.stdout.split()[0] == hashlib.sha256(BINARY).hexdigest()


def test_write_overwrites_and_creates_parents(sbx, d):
    sbx.files.write(f"{d}/x/y/z.txt", "first")
    sbx.files.write(f"{d}/x/y/z.txt", "2")
    assert sbx.files.read(f"{d}/x/y/z.txt") == "2"


def test_write_empty_file(sbx, d):
    sbx.files.write(f"{d}/empty", b"")
    assert sbx.files.read(f"{d}/empty", format="bytes") == bytearray()
    assert sbx.files.get_info(f"{d}/empty").size == 0


def test_list_with_depth(sbx, d):
    sbx.files.write(f"{d}/top.txt", "t")
    sbx.files.write(f"{d}/sub/inner.txt", "i")
    sbx.files.write(f"{d}/sub/deeper/leaf.txt", "l")

    one = {e.path: e for e in sbx.files.list(d)}
    assert set(one) == {f"{d}/top.txt", f"{d}/sub"}
    assert one[f"{d}/sub"].type == FileType.DIR
    assert one[f"{d}/top.txt"].type == FileType.FILE
    assert one[f"{d}/top.txt"].name == "top.txt"

    two = {e.path for e in sbx.files.list(d, depth=2)}
    assert two == {f"{d}/top.txt", f"{d}/sub", f"{d}/sub/inner.txt", f"{d}/sub/deeper"}

    three = {e.path for e in sbx.files.list(d, depth=3)}
    assert f"{d}/sub/deeper/leaf.txt" in three


def test_exists(sbx, d):
    sbx.files.write(f"{d}/a", "a")
    assert sbx.files.exists(f"{d}/a") is True
    assert sbx.files.exists(d) is True
    assert sbx.files.exists(f"{d}/missing") is False


def test_make_dir_true_then_false(sbx, d):
    assert sbx.files.make_dir(f"{d}/new/nested") is True
    assert sbx.files.make_dir(f"{d}/new/nested") is False
    assert sbx.files.get_info(f"{d}/new/nested").type == FileType.DIR


def test_rename(sbx, d):
    sbx.files.write(f"{d}/old.txt", "content")
    info = sbx.files.rename(f"{d}/old.txt", f"{d}/new.txt")
    assert info.path == f"{d}/new.txt"
    assert info.name == "new.txt"
    assert sbx.files.exists(f"{d}/old.txt") is False
    assert sbx.files.read(f"{d}/new.txt") == "content"


def test_remove_file_and_dir(sbx, d):
    sbx.files.write(f"{d}/f.txt", "x")
    sbx.files.write(f"{d}/tree/a/b.txt", "x")
    sbx.files.remove(f"{d}/f.txt")
    assert sbx.files.exists(f"{d}/f.txt") is False
    sbx.files.remove(f"{d}/tree")
    assert sbx.files.exists(f"{d}/tree") is False


def test_get_info_fields(sbx, d):
    sbx.files.write(f"{d}/info.txt", "12345")
    sbx.commands.run(f"chmod 640 {d}/info.txt", user="root")
    info = sbx.files.get_info(f"{d}/info.txt")
    assert info.name == "info.txt"
    assert info.path == f"{d}/info.txt"
    assert info.type == FileType.FILE
    assert info.size == 5
    assert info.mode & 0o777 == 0o640
    assert info.permissions == "-rw-r-----"
    assert info.owner == "user"
    assert isinstance(info.group, str) and info.group
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - info.modified_time).total_seconds()) < 120

    dir_info = sbx.files.get_info(d)
    assert dir_info.type == FileType.DIR
    assert dir_info.permissions.startswith("d")


def test_symlink_reported(sbx, d):
    sbx.files.write(f"{d}/target.txt", "t")
    sbx.commands.run(f"ln -s {d}/target.txt {d}/link")
    info = sbx.files.get_info(f"{d}/link")
    assert info.type == FileType.SYMLINK
    assert info.symlink_target == f"{d}/target.txt"


def test_missing_file_errors(sbx, d):
    with pytest.raises(FileNotFoundException):
        sbx.files.read(f"{d}/nope.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.get_info(f"{d}/nope.txt")
    with pytest.raises(FileNotFoundException):
        sbx.files.list(f"{d}/nope-dir")


def test_watch_dir_sync_sees_created_file(sbx, d):
    handle = sbx.files.watch_dir(d)
    try:
        sbx.files.write(f"{d}/watched.txt", "w")

        def created():
            events = handle.get_new_events()
            seen.extend(events)
            return any(
                e.name == "watched.txt" and e.type == FilesystemEventType.CREATE for e in seen
            )

        seen: list = []
        wait_for("CREATE event from the sync watcher", created, timeout_s=20, interval_s=0.2)
    finally:
        handle.stop()


def test_watch_dir_async_stream_sees_created_file(sbx, d):
    async def scenario():
        asbx = await AsyncSandbox.connect(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT_S)
        events = []
        got = asyncio.Event()

        def on_event(e):
            events.append(e)
            if e.name == "async.txt" and e.type == FilesystemEventType.CREATE:
                got.set()

        handle = await asbx.files.watch_dir(d, on_event=on_event, timeout=60)
        try:
            await asbx.files.write(f"{d}/async.txt", "a")
            try:
                await asyncio.wait_for(got.wait(), timeout=20)
            except asyncio.TimeoutError:
                pytest.fail(f"no CREATE event for async.txt within 20s; events: {events!r}")
        finally:
            await handle.stop()

    asyncio.run(scenario())


def test_async_sandbox_commands_files_and_recursive_watch(sbx, d):
    async def scenario():
        asbx = await AsyncSandbox.connect(sbx.sandbox_id, request_timeout=REQUEST_TIMEOUT_S)
        assert (await asbx.commands.run("echo async")).stdout == "async\n"
        await asbx.files.make_dir(f"{d}/deep/er")
        got = asyncio.Event()
        events = []

        def on_event(e):
            events.append(e)
            if e.name.endswith("nested.txt") and e.type == FilesystemEventType.CREATE:
                got.set()

        handle = await asbx.files.watch_dir(d, on_event=on_event, recursive=True, timeout=60)
        try:
            await asbx.files.write(f"{d}/deep/er/nested.txt", "n")
            try:
                await asyncio.wait_for(got.wait(), timeout=20)
            except asyncio.TimeoutError:
                pytest.fail(f"no recursive CREATE event within 20s; events: {events!r}")
        finally:
            await handle.stop()
        assert await asbx.files.read(f"{d}/deep/er/nested.txt") == "n"

    asyncio.run(scenario())


def test_upload_url_with_plain_http_client(sbx, d):
    path = f"{d}/uploaded.bin"
    url = sbx.upload_url(path)
    r = httpx.post(url, files={"file": ("uploaded.bin", BINARY)}, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, r.text
    assert bytes(sbx.files.read(path, format="bytes")) == BINARY


def test_download_url_with_urllib(sbx, d):
    path = f"{d}/download.bin"
    sbx.files.write(path, BINARY)
    url = sbx.download_url(path)
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
        assert resp.status == 200
        assert resp.read() == BINARY


def test_signed_urls_with_expiration(sbx, d):
    path = f"{d}/expiring.txt"
    up = sbx.upload_url(path, use_signature_expiration=120)
    assert "signature_expiration=" in up
    r = httpx.post(up, files={"file": ("expiring.txt", b"exp")}, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code == 200, r.text
    down = sbx.download_url(path, use_signature_expiration=120)
    assert httpx.get(down, timeout=REQUEST_TIMEOUT_S).content == b"exp"


def test_download_url_rejects_tampered_signature(sbx, d):
    path = f"{d}/secret.txt"
    sbx.files.write(path, "secret")
    sbx.files.write(f"{d}/other.txt", "other")
    url = sbx.download_url(path)
    assert "signature=" in url, "server returned no envdAccessToken, so URLs are unsigned"
    tampered = url.replace("signature=v1_", "signature=v1_x")
    r = httpx.get(tampered, timeout=REQUEST_TIMEOUT_S)
    assert r.status_code in (401, 403), (r.status_code, r.text)
    # Different path, same signature: must not be accepted either.
    other = url.replace("secret.txt", "other.txt")
    assert httpx.get(other, timeout=REQUEST_TIMEOUT_S).status_code in (401, 403)
