// Sandbox lifecycle through the control-plane REST API with the unmodified JS SDK: create
// with metadata and env vars, getInfo, setTimeout, list with metadata filters and
// pagination, metrics, connect by id, kill, and the errors the SDK maps to its own classes.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  AuthenticationError,
  Sandbox,
  SandboxNotFoundError,
  TimeoutError,
} from 'e2b'
import {
  RUN_TAG,
  allItems,
  createSandbox,
  killQuietly,
  preflight,
  waitFor,
} from './helpers.mjs'

const T = { timeout: 180_000 }
const AWKWARD_KEY = 'k y&z'
const AWKWARD_VALUE = 'v&x=1/ü %'
const UNKNOWN_ID = 'nosuchsandbox0000000'
const METADATA = { suite: RUN_TAG, module: 'sandbox', [AWKWARD_KEY]: AWKWARD_VALUE }

const ids = (list) => new Set(list.map((s) => s.sandboxId))

describe('sandbox lifecycle', T, () => {
  let sbx

  before(async () => {
    await preflight()
    sbx = await createSandbox({ metadata: METADATA, envs: { COMPAT_ENV: 'lifecycle-js' } })
  })

  after(async () => {
    await killQuietly(sbx)
  })

  test('create gives a usable sandbox with env vars', T, async () => {
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/)
    assert.equal(await sbx.isRunning(), true)
    const r = await sbx.commands.run('echo $COMPAT_ENV')
    assert.equal(r.stdout, 'lifecycle-js\n')
  })

  test('getInfo fields', T, async () => {
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.ok(info.templateId)
    assert.deepEqual(info.metadata, METADATA)
    assert.equal(info.state, 'running')
    assert.ok(info.cpuCount >= 1)
    assert.ok(info.memoryMB > 0)
    assert.match(info.envdVersion, /^\d+\.\d+\.\d+/)
    assert.ok(info.startedAt instanceof Date && !isNaN(info.startedAt))
    assert.ok(info.startedAt.getTime() <= Date.now() + 5_000)
    assert.ok(info.endAt > info.startedAt)
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).sandboxId, sbx.sandboxId)
  })

  test('setTimeout moves endAt', T, async () => {
    await sbx.setTimeout(900_000)
    let end = (await sbx.getInfo()).endAt.getTime()
    assert.ok(Math.abs(end - Date.now() - 900_000) < 60_000, `endAt ${new Date(end)}`)
    await Sandbox.setTimeout(sbx.sandboxId, 400_000)
    end = (await sbx.getInfo()).endAt.getTime()
    assert.ok(Math.abs(end - Date.now() - 400_000) < 60_000, `endAt ${new Date(end)}`)
  })

  test('list filters by metadata, including values that need escaping', T, async () => {
    let found = await allItems(Sandbox.list({ query: { metadata: { suite: RUN_TAG } } }))
    assert.ok(ids(found).has(sbx.sandboxId))
    const mine = found.find((s) => s.sandboxId === sbx.sandboxId)
    assert.deepEqual(mine.metadata, METADATA)
    assert.equal(mine.state, 'running')

    const awkward = { [AWKWARD_KEY]: AWKWARD_VALUE, suite: RUN_TAG }
    found = await allItems(Sandbox.list({ query: { metadata: awkward } }))
    assert.ok(ids(found).has(sbx.sandboxId))

    const wrong = { [AWKWARD_KEY]: 'v&x=1/ü', suite: RUN_TAG }
    found = await allItems(Sandbox.list({ query: { metadata: wrong } }))
    assert.ok(!ids(found).has(sbx.sandboxId))

    const paused = { metadata: { suite: RUN_TAG }, state: ['paused'] }
    found = await allItems(Sandbox.list({ query: paused }))
    assert.ok(!ids(found).has(sbx.sandboxId))
  })

  test('getMetrics', T, async () => {
    const items = await waitFor('a non-empty getMetrics()', async () => {
      const m = await sbx.getMetrics()
      return m.length ? m : null
    }, { timeoutMs: 30_000, intervalMs: 1_000 })
    const m = items[items.length - 1]
    assert.ok(m.cpuCount >= 1)
    assert.ok(m.memTotal > 0 && m.memUsed > 0 && m.memUsed <= m.memTotal)
    assert.ok(m.diskTotal > 0 && m.diskUsed > 0 && m.diskUsed <= m.diskTotal)
    assert.ok(m.timestamp instanceof Date)
  })

  test('connect by id', T, async () => {
    const other = await Sandbox.connect(sbx.sandboxId)
    assert.equal(other.sandboxId, sbx.sandboxId)
    await other.files.write('/tmp/via-connect-js.txt', 'connected')
    assert.equal(await sbx.files.read('/tmp/via-connect-js.txt'), 'connected')
  })

  test('pagination, kill and a killed sandbox', T, async () => {
    const tag = { suite: RUN_TAG, module: 'pagination' }
    let first
    let second
    try {
      first = await createSandbox({ metadata: tag })
      second = await createSandbox({ metadata: tag })

      const pager = Sandbox.list({ query: { metadata: tag }, limit: 1 })
      const seen = []
      for (let i = 0; i < 10 && pager.hasNext; i++) {
        const page = await pager.nextItems()
        assert.ok(page.length <= 1, `page of ${page.length} with limit 1`)
        seen.push(...page.map((s) => s.sandboxId))
      }
      assert.equal(pager.hasNext, false)
      assert.deepEqual(seen.sort(), [first.sandboxId, second.sandboxId].sort())

      assert.equal(await second.kill(), true)
      assert.equal(await second.kill(), false)
      assert.equal(await Sandbox.kill(second.sandboxId), false)
      await assert.rejects(Sandbox.getInfo(second.sandboxId), SandboxNotFoundError)
      await assert.rejects(second.commands.run('echo gone'), SandboxNotFoundError)
      await assert.rejects(second.commands.list(), TimeoutError)
      await assert.rejects(second.files.read('/etc/hostname'), TimeoutError)
      assert.equal(await second.isRunning(), false)
      const remaining = await allItems(Sandbox.list({ query: { metadata: tag } }))
      assert.deepEqual([...ids(remaining)], [first.sandboxId])
    } finally {
      await killQuietly(first)
      await killQuietly(second)
    }
  })
})

describe('error cases', T, () => {
  before(preflight)

  test('unknown sandbox id', T, async () => {
    await assert.rejects(Sandbox.getInfo(UNKNOWN_ID), SandboxNotFoundError)
    assert.equal(await Sandbox.kill(UNKNOWN_ID), false)
    await assert.rejects(Sandbox.connect(UNKNOWN_ID), SandboxNotFoundError)
    await assert.rejects(Sandbox.setTimeout(UNKNOWN_ID, 60_000), SandboxNotFoundError)
  })

  test('wrong API key', T, async () => {
    const apiKey = 'e2b_' + '0'.repeat(40)
    await assert.rejects(Sandbox.list({ apiKey }).nextItems(), AuthenticationError)
    await assert.rejects(Sandbox.getInfo(UNKNOWN_ID, { apiKey }), AuthenticationError)
  })
})
