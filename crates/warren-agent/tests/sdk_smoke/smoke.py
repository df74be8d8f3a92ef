# Smoke test of a single agent with the unmodified E2B Python SDK in debug mode (envd at
# http://localhost:49983, no control plane). Run the agent with
#   HOME=$(mktemp -d) target/debug/warren-agent --listen 127.0.0.1:49983
# then: .venv-compat/bin/python crates/warren-agent/tests/sdk_smoke/smoke.py
import time
from e2b import Sandbox, CommandExitException, FileType
sb = Sandbox.create(debug=True)
r = sb.commands.run("echo hi; echo err >&2")
assert r.stdout == "hi\n" and r.stderr == "err\n" and r.exit_code == 0, r
try:
    sb.commands.run("exit 3")
    raise SystemExit("expected exit exception")
except CommandExitException as e:
    assert e.exit_code == 3
r = sb.commands.run("echo $FOO", envs={"FOO": "bar"}, cwd="/tmp")
assert r.stdout == "bar\n"
h = sb.commands.run("sleep 30", background=True)
assert any(p.pid == h.pid for p in sb.commands.list())
assert sb.commands.kill(h.pid)
assert not sb.commands.kill(999999)
h = sb.commands.run("cat", background=True, stdin=True)
sb.commands.send_stdin(h.pid, "abc\n")
sb.commands.close_stdin(h.pid)
res = h.wait()
assert res.stdout == "abc\n", res
sb.files.write("smoke/a.txt", "hello")
assert sb.files.read("smoke/a.txt") == "hello"
assert sb.files.read("smoke/a.txt", format="bytes") == b"hello"
sb.files.write_files([{"path": "smoke/b.txt", "data": "B"}, {"path": "smoke/c/d.txt", "data": b"D"}])
names = sorted(e.name for e in sb.files.list("smoke"))
assert names == ["a.txt", "b.txt", "c"], names
assert sb.files.exists("smoke/a.txt") and not sb.files.exists("nope")
assert sb.files.make_dir("smoke/newdir") is True
assert sb.files.make_dir("smoke/newdir") is False
info = sb.files.get_info("smoke/a.txt")
assert info.size == 5 and info.type == FileType.FILE, info
sb.files.rename("smoke/a.txt", "smoke/z.txt")
sb.files.remove("smoke")
assert not sb.files.exists("smoke")
w = sb.files.watch_dir("/tmp")
sb.files.write("/tmp/agentsmoke-watch.txt", "x")
time.sleep(0.3)
evs = w.get_new_events()
w.stop()
assert any(e.name == "agentsmoke-watch.txt" for e in evs), evs
from e2b.sandbox.commands.command_handle import PtySize
out = []
t = sb.pty.create(PtySize(rows=24, cols=80))
sb.pty.send_stdin(t.pid, b"stty size; exit\n")
t.wait(on_pty=lambda d: out.append(d))
assert b"24 80" in b"".join(out), out
assert sb.is_running()
print("PYTHON SMOKE OK")
