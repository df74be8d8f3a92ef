# Same as smoke.py with the async client (WatchDir stream instead of polling watchers).
import asyncio
from e2b import AsyncSandbox
async def main():
    sb = await AsyncSandbox.create(debug=True)
    evs = []
    w = await sb.files.watch_dir("/tmp", on_event=lambda e: evs.append(e))
    await sb.files.write("/tmp/agentsmoke-async.txt", "x")
    await asyncio.sleep(0.3)
    await w.stop()
    assert any(e.name == "agentsmoke-async.txt" for e in evs), evs
    h = await sb.commands.run("cat", background=True, stdin=True)
    await sb.commands.send_stdin(h.pid, "q\n")
    await sb.commands.close_stdin(h.pid)
    r = await h.wait()
    assert r.stdout == "q\n"
    r = await sb.commands.run("head -c 5000000 /dev/zero | wc -c")
    assert r.stdout.strip() == "5000000"
    print("ASYNC SMOKE OK")
asyncio.run(main())
