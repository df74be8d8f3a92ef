"""Processes through `sandbox.commands` and `sandbox.pty` (envd process.Process service):
foreground and background runs, exit codes, env vars, cwd and user, list/kill/connect,
stdin, output callbacks and a PTY with resize. One sandbox serves the whole module."""

import threading
import time

import pytest

from e2b import CommandExitException, NotFoundException, PtySize, Sandbox, TimeoutException

from helpers import create_sandbox, kill_quietly, wait_for

SANDBOX_ENV = {"COMPAT_ENV": "from-create", "COMPAT_SHARED": "create"}


@pytest.fixture(scope="module")
def sbx(run_tag):
    s = create_sandbox(metadata={"suite": run_tag, "module": "commands"}, envs=SANDBOX_ENV)
    try:
        yield s
    finally:
        kill_quietly(s)


def pids(sbx: Sandbox) -> set:
    return {p.pid for p in sbx.commands.list()}


def test_run_stdout_stderr_exit_code(sbx):
    r = sbx.commands.run("echo out; echo err 1>&2")
    assert r.exit_code == 0
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"
    assert r.error is None


def test_nonzero_exit_raises_with_exit_code(sbx):
    with pytest.raises(CommandExitException) as info:
        sbx.commands.run("echo partial; echo oops 1>&2; exit 3")
    assert info.value.exit_code == 3
    assert info.value.stdout == "partial\n"
    assert info.value.stderr == "oops\n"


def test_create_env_vars_visible(sbx):
    assert sbx.commands.run("echo $COMPAT_ENV").stdout == "from-create\n"


def test_command_env_vars_override_create_env_vars(sbx):
    r = sbx.commands.run(
        'echo "$COMPAT_SHARED $COMPAT_ONLY"',
        envs={"COMPAT_SHARED": "command", "COMPAT_ONLY": "x y"},
    )
    assert r.stdout == "command x y\n"


def test_cwd(sbx):
    assert sbx.commands.run("pwd", cwd="/tmp").stdout == "/tmp\n"


def test_user_root(sbx):
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"


def test_default_user_is_user_with_home(sbx):
    # E2B's templates run commands as `user` in /home/user unless told otherwise.
    r = sbx.commands.run('whoami; echo "$HOME"; pwd')
    assert r.stdout == "user\n/home/user\n/home/user\n"


def test_multibyte_output_and_large_output(sbx):
    r = sbx.commands.run("printf 'héllo ✓\\n'; head -c 200000 /dev/zero | tr '\\0' a")
    assert r.stdout.startswith("héllo ✓\n")
    assert r.stdout.count("a") == 200000


def test_on_stdout_on_stderr_callbacks(sbx):
    out, err = [], []
    r = sbx.commands.run(
        "echo a; sleep 0.2; echo b; echo c 1>&2",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert "".join(out) == "a\nb\n"
    assert "".join(err) == "c\n"
    assert r.stdout == "a\nb\n"


def test_background_list_kill(sbx):
    h = sbx.commands.run("sleep 600", background=True)
    try:
        assert h.pid > 0
        procs = {p.pid: p for p in sbx.commands.list()}
        assert h.pid in procs
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-l", "-c", "sleep 600"]

        assert sbx.commands.kill(h.pid) is True
        with pytest.raises(CommandExitException):
            h.wait()
        wait_for("killed process to leave commands.list()", lambda: h.pid not in pids(sbx))
        assert sbx.commands.kill(h.pid) is False
    finally:
        sbx.commands.kill(h.pid)


def test_handle_kill(sbx):
    h = sbx.commands.run("sleep 600", background=True)
    assert h.kill() is True
    with pytest.raises(CommandExitException):
        h.wait()


def test_background_wait_collects_output(sbx):
    h = sbx.commands.run("echo first; sleep 0.5; echo second", background=True)
    r = h.wait()
    assert r.stdout == "first\nsecond\n"
    assert r.exit_code == 0


def test_connect_to_running_process(sbx):
    h = sbx.commands.run(
        "for i in $(seq 1 15); do echo line$i; sleep 0.2; done; exit 4", background=True
    )
    try:
        h.disconnect()
        h2 = sbx.commands.connect(h.pid)
        assert h2.pid == h.pid
        with pytest.raises(CommandExitException) as info:
            h2.wait()
        # Output from before the connect is not replayed; the tail must arrive.
        assert info.value.exit_code == 4
        assert "line15\n" in info.value.stdout
    finally:
        sbx.commands.kill(h.pid)


def test_connect_to_unknown_pid_fails(sbx):
    with pytest.raises(NotFoundException):
        sbx.commands.connect(999999).wait()


def test_stdin_send_and_close(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    try:
        sbx.commands.send_stdin(h.pid, "hello\n")
        h.send_stdin(b"bytes\n")
        sbx.commands.close_stdin(h.pid)
        r = h.wait()
        assert r.stdout == "hello\nbytes\n"
        assert r.exit_code == 0
    finally:
        sbx.commands.kill(h.pid)


def test_stdin_stream_input(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    try:
        sbx.commands.stream_input(h.pid, ["one ", b"two ", "three\n"])
        h.close_stdin()
        assert h.wait().stdout == "one two three\n"
    finally:
        sbx.commands.kill(h.pid)


def test_command_timeout_ends_wait(sbx):
    # The SDK enforces `timeout` on the stream; the server must let it go cleanly.
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutException):
            sbx.commands.run("sleep 31", timeout=2)
        assert time.monotonic() - started < 20
    finally:
        for p in sbx.commands.list():
            if p.args[-1:] == ["sleep 31"]:
                sbx.commands.kill(p.pid)


class PtyReader:
    """Collects a PTY's output on a thread (the sync SDK delivers it by iteration)."""

    def __init__(self, handle):
        self.handle = handle
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.handle.wait(on_pty=self._add)
        except Exception:
            pass  # killing the PTY ends the stream with a non-zero exit

    def _add(self, data: bytes):
        with self.lock:
            self.buf.extend(data)

    def text(self) -> str:
        with self.lock:
            return self.buf.decode("utf-8", errors="replace")


def test_pty_create_input_resize_kill(sbx):
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    try:
        reader = PtyReader(h)
        sbx.pty.send_stdin(h.pid, b"stty size; echo mark-$((6*7))\n")
        wait_for("`stty size` in the PTY", lambda: "mark-42" in reader.text(), timeout_s=30)
        assert "24 80" in reader.text()
        assert h.pid in pids(sbx)

        sbx.pty.resize(h.pid, PtySize(rows=40, cols=123))
        sbx.pty.send_stdin(h.pid, b"stty size; echo mark-$((7*7))\n")
        wait_for("resized `stty size`", lambda: "mark-49" in reader.text(), timeout_s=30)
        assert "40 123" in reader.text()

        assert sbx.pty.kill(h.pid) is True
        reader.thread.join(timeout=20)
        assert not reader.thread.is_alive(), "PTY stream did not end after kill"
        wait_for("killed PTY to leave commands.list()", lambda: h.pid not in pids(sbx))
    finally:
        sbx.pty.kill(h.pid)


def test_pty_env_and_cwd(sbx):
    h = sbx.pty.create(PtySize(rows=10, cols=60), cwd="/tmp", envs={"PTY_VAR": "pv"})
    try:
        reader = PtyReader(h)
        sbx.pty.send_stdin(h.pid, b'echo "v=$PTY_VAR t=$TERM d=$(pwd)"\n')
        wait_for("PTY env echo", lambda: "d=/tmp" in reader.text(), timeout_s=30)
        assert "v=pv t=xterm-256color d=/tmp" in reader.text()
    finally:
        sbx.pty.kill(h.pid)
