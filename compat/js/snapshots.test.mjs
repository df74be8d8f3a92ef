// Live snapshots and pause/resume with the unmodified JS SDK. The source sandbox runs a
// Python process that keeps a counter in memory and publishes it to a file every 0.2 s; a
// sandbox created from a snapshot must continue that process from the snapshot's value,
// have the source's files, its own disk, its own randomness and a current clock.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from 'e2b'
import { RUN_TAG, allItems, createSandbox, killQuietly, preflight, waitFor } from './helpers.mjs'

const T = { timeout: 240_000 }
const COUNTER_FILE = '/tmp/compat-counter'
const COUNTER_PY = [
  'import os, time',
  'i = 0',
  'while True:',
  '    i += 1',
  `    open('${COUNTER_FILE}.tmp', 'w').write(str(i))`,
  `    os.replace('${COUNTER_FILE}.tmp', '${COUNTER_FILE}')`,
  '    time.sleep(0.2)',
].join('\n')
const BEFORE_FILE = '/home/user/before-snapshot-js.txt'
const ENTROPY_CMD = 'cat /proc/sys/kernel/random/uuid; head -c 16 /dev/urandom | od -x | head -1'

const readCounter = async (s) => Number((await s.files.read(COUNTER_FILE)).trim())
const counterAbove = (s, v, what) =>
  waitFor(what, async () => (await readCounter(s)) > v, { timeoutMs: 20_000 })
const deleteQuietly = (id) => Sandbox.deleteSnapshot(id).catch(() => {})

describe('snapshots', T, () => {
  let source
  let counterPid
  let snap
  let before_
  const clones = []

  before(async () => {
    await preflight()
    source = await createSandbox({ metadata: { suite: RUN_TAG, module: 'snapshots' } })
    await source.files.write(BEFORE_FILE, 'before')
    const h = await source.commands.run(`python3 -c "${COUNTER_PY}"`, { background: true })
    counterPid = h.pid
    await h.disconnect()
    await waitFor('the counter to reach 5', async () => (await readCounter(source)) >= 5, {
      timeoutMs: 30_000,
    })
    before_ = await readCounter(source)
    snap = await source.createSnapshot()
    for (let i = 0; i < 2; i++) clones.push(await createSandbox({ template: snap.snapshotId }))
  })

  after(async () => {
    for (const c of clones) await killQuietly(c)
    await killQuietly(source)
    if (snap) await deleteQuietly(snap.snapshotId)
  })

  test('createSnapshot returns an id; the source keeps running', T, async () => {
    assert.ok(typeof snap.snapshotId === 'string' && snap.snapshotId)
    assert.ok(Array.isArray(snap.names))
    assert.equal((await source.getInfo()).state, 'running')
    await counterAbove(source, before_, "the source's counter to advance")
  })

  test('clones continue the process from the snapshot value', T, async () => {
    for (const c of clones) {
      const first = await readCounter(c)
      assert.ok(first >= before_, `counter restarted: ${first} < ${before_}`)
      await counterAbove(c, first, "a clone's counter to advance")
      const pids = (await c.commands.list()).map((p) => p.pid)
      assert.ok(pids.includes(counterPid), `pid ${counterPid} not in ${pids}`)
    }
  })

  test('files: present from before, isolated after', T, async () => {
    const [a, b] = clones
    assert.equal(await a.files.read(BEFORE_FILE), 'before')
    await a.files.write('/home/user/only-in-a-js.txt', 'a')
    await source.files.write('/home/user/only-in-source-js.txt', 's')
    assert.equal(await source.files.exists('/home/user/only-in-a-js.txt'), false)
    assert.equal(await b.files.exists('/home/user/only-in-a-js.txt'), false)
    assert.equal(await a.files.exists('/home/user/only-in-source-js.txt'), false)
  })

  test('siblings differ in randomness; clocks are current', T, async () => {
    const outs = []
    for (const s of [source, ...clones]) {
      outs.push((await s.commands.run(ENTROPY_CMD)).stdout)
    }
    assert.equal(new Set(outs).size, 3, outs.join('\n'))
    for (const c of clones) {
      const t0 = Date.now() / 1000
      const guest = Number((await c.commands.run('date +%s.%N')).stdout.trim())
      const t1 = Date.now() / 1000
      // Within a second of the host's clock, not the snapshot's time.
      assert.ok(guest >= t0 - 1 && guest <= t1 + 1, `${t0} ${guest} ${t1}`)
    }
  })

  test('listSnapshots filters by sandbox', T, async () => {
    const ofSource = await allItems(Sandbox.listSnapshots({ sandboxId: source.sandboxId }))
    assert.ok(ofSource.some((s) => s.snapshotId === snap.snapshotId))
    const ofClone = await allItems(Sandbox.listSnapshots({ sandboxId: clones[0].sandboxId }))
    assert.ok(!ofClone.some((s) => s.snapshotId === snap.snapshotId))
    const own = await allItems(source.listSnapshots())
    assert.ok(own.some((s) => s.snapshotId === snap.snapshotId))
  })

  test('named snapshot; deleteSnapshot true then false', T, async () => {
    const name = `compat-js-${Date.now().toString(36)}`
    const info = await source.createSnapshot({ name })
    try {
      assert.ok(
        info.snapshotId.includes(name) || info.names.some((n) => n.includes(name)),
        JSON.stringify(info)
      )
      assert.equal(await Sandbox.deleteSnapshot(info.snapshotId), true)
      assert.equal(await Sandbox.deleteSnapshot(info.snapshotId), false)
    } finally {
      await deleteQuietly(info.snapshotId)
    }
  })

  test('pause, then connect resumes with state', T, async () => {
    const id = source.sandboxId
    const before = await readCounter(source)
    try {
      assert.equal(await source.pause(), true)
      assert.equal((await Sandbox.getInfo(id)).state, 'paused')
      assert.equal(await source.pause(), false)
      const resumed = await Sandbox.connect(id)
      assert.equal((await Sandbox.getInfo(id)).state, 'running')
      const first = await readCounter(resumed)
      assert.ok(first >= before, `counter restarted after resume: ${first} < ${before}`)
      await counterAbove(resumed, first, 'the counter to advance after resume')
      assert.equal(await resumed.files.read(BEFORE_FILE), 'before')
    } finally {
      await Sandbox.connect(id).catch(() => {})
    }
  })
})
