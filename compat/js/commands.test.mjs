// Processes through `sandbox.commands` and `sandbox.pty` with the unmodified JS SDK:
// foreground/background runs, exit codes, env vars, cwd and user, list/kill/connect,
// stdin and a PTY with resize. One sandbox serves the whole file.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { CommandExitError, NotFoundError } from 'e2b'
import { RUN_TAG, createSandbox, killQuietly, preflight, waitFor } from './helpers.mjs'

const T = { timeout: 180_000 }

describe('commands', T, () => {
  let sbx
  const pids = async () => new Set((await sbx.commands.list()).map((p) => p.pid))

  before(async () => {
    await preflight()
    sbx = await createSandbox({
      metadata: { suite: RUN_TAG, module: 'commands' },
      envs: { COMPAT_ENV: 'from-create', COMPAT_SHARED: 'create' },
    })
  })

  after(async () => {
    await killQuietly(sbx)
  })

  test('run: stdout, stderr, exit code', T, async () => {
    const r = await sbx.commands.run('echo out; echo err 1>&2')
    assert.equal(r.exitCode, 0)
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')
  })

  test('non-zero exit rejects with CommandExitError', T, async () => {
    await assert.rejects(sbx.commands.run('echo partial; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `got ${err}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stdout, 'partial\n')
      return true
    })
  })

  test('env vars from create and per command', T, async () => {
    assert.equal((await sbx.commands.run('echo $COMPAT_ENV')).stdout, 'from-create\n')
    const r = await sbx.commands.run('echo "$COMPAT_SHARED $ONLY"', {
      envs: { COMPAT_SHARED: 'command', ONLY: 'x y' },
    })
    assert.equal(r.stdout, 'command x y\n')
  })

  test('cwd and user', T, async () => {
    assert.equal((await sbx.commands.run('pwd', { cwd: '/tmp' })).stdout, '/tmp\n')
    assert.equal((await sbx.commands.run('whoami', { user: 'root' })).stdout, 'root\n')
    assert.equal((await sbx.commands.run('whoami')).stdout, 'user\n')
  })

  test('onStdout / onStderr callbacks', T, async () => {
    const out = []
    const err = []
    await sbx.commands.run('echo a; sleep 0.2; echo b; echo c 1>&2', {
      onStdout: (d) => out.push(d),
      onStderr: (d) => err.push(d),
    })
    assert.equal(out.join(''), 'a\nb\n')
    assert.equal(err.join(''), 'c\n')
  })

  test('background, list, kill', T, async () => {
    const h = await sbx.commands.run('sleep 600', { background: true })
    try {
      const procs = await sbx.commands.list()
      const p = procs.find((x) => x.pid === h.pid)
      assert.ok(p, `pid ${h.pid} not in ${JSON.stringify(procs)}`)
      assert.equal(p.cmd, '/bin/bash')
      assert.deepEqual(p.args, ['-l', '-c', 'sleep 600'])
      assert.equal(await sbx.commands.kill(h.pid), true)
      await assert.rejects(h.wait(), CommandExitError)
      await waitFor('killed pid to leave list()', async () => !(await pids()).has(h.pid))
      assert.equal(await sbx.commands.kill(h.pid), false)
    } finally {
      await sbx.commands.kill(h.pid).catch(() => {})
    }
  })

  test('connect to a running process', T, async () => {
    const h = await sbx.commands.run(
      'for i in $(seq 1 15); do echo line$i; sleep 0.2; done',
      { background: true }
    )
    try {
      await h.disconnect()
      const h2 = await sbx.commands.connect(h.pid)
      assert.equal(h2.pid, h.pid)
      const r = await h2.wait()
      assert.equal(r.exitCode, 0)
      assert.match(r.stdout, /line15\n$/)
    } finally {
      await sbx.commands.kill(h.pid).catch(() => {})
    }
  })

  test('connect to an unknown pid', T, async () => {
    await assert.rejects(sbx.commands.connect(999999), NotFoundError)
  })

  test('stdin: send and close', T, async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    try {
      await sbx.commands.sendStdin(h.pid, 'hello\n')
      await h.sendStdin(new TextEncoder().encode('bytes\n'))
      await sbx.commands.closeStdin(h.pid)
      const r = await h.wait()
      assert.equal(r.stdout, 'hello\nbytes\n')
    } finally {
      await sbx.commands.kill(h.pid).catch(() => {})
    }
  })

  test('PTY: input, resize, kill', T, async () => {
    const chunks = []
    const text = () => Buffer.concat(chunks).toString('utf8')
    const h = await sbx.pty.create({
      cols: 80,
      rows: 24,
      onData: (d) => chunks.push(Buffer.from(d)),
    })
    try {
      const enc = new TextEncoder()
      await sbx.pty.sendInput(h.pid, enc.encode('stty size; echo mark-$((6*7))\n'))
      await waitFor('stty size output', () => text().includes('mark-42'), { timeoutMs: 30_000 })
      assert.ok(text().includes('24 80'), text())

      await sbx.pty.resize(h.pid, { cols: 123, rows: 40 })
      await sbx.pty.sendInput(h.pid, enc.encode('stty size; echo mark-$((7*7))\n'))
      await waitFor('resized stty size', () => text().includes('mark-49'), { timeoutMs: 30_000 })
      assert.ok(text().includes('40 123'), text())

      assert.equal(await sbx.pty.kill(h.pid), true)
      await assert.rejects(h.wait(), CommandExitError)
      await waitFor('killed PTY to leave list()', async () => !(await pids()).has(h.pid))
    } finally {
      await sbx.pty.kill(h.pid).catch(() => {})
    }
  })
})
