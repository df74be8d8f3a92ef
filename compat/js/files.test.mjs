// Files through `sandbox.files` with the unmodified JS SDK: write/read of text and binary
// data, list with depth, exists, makeDir, rename, remove, getInfo, watchDir, missing-file
// errors and the signed upload/download URLs. One sandbox serves the whole file; each test
// works in its own directory under /tmp.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { FileNotFoundError, FileType, FilesystemEventType } from 'e2b'
import { RUN_TAG, createSandbox, killQuietly, preflight, waitFor } from './helpers.mjs'

const T = { timeout: 180_000 }
const BINARY = new Uint8Array(16_389).map((_, i) => (i * 7 + 3) % 256)

describe('files', T, () => {
  let sbx
  let n = 0

  before(async () => {
    await preflight()
    sbx = await createSandbox({ metadata: { suite: RUN_TAG, module: 'files' } })
  })

  after(async () => {
    await killQuietly(sbx)
  })

  // A fresh directory for one test.
  async function dir() {
    const d = `/tmp/compat-js-${randomUUID().slice(0, 8)}-${n++}`
    assert.equal(await sbx.files.makeDir(d), true)
    return d
  }

  test('write and read text', T, async () => {
    const d = await dir()
    const info = await sbx.files.write(`${d}/hello.txt`, 'hello ✓\n')
    assert.equal(info.name, 'hello.txt')
    assert.equal(info.path, `${d}/hello.txt`)
    assert.equal(await sbx.files.read(`${d}/hello.txt`), 'hello ✓\n')
    assert.equal((await sbx.commands.run(`cat ${d}/hello.txt`)).stdout, 'hello ✓\n')
  })

  test('binary round trip', T, async () => {
    const d = await dir()
    await sbx.files.write(`${d}/blob.bin`, BINARY.buffer)
    const got = await sbx.files.read(`${d}/blob.bin`, { format: 'bytes' })
    assert.deepEqual(Buffer.from(got), Buffer.from(BINARY))
  })

  test('list with depth', T, async () => {
    const d = await dir()
    await sbx.files.write(`${d}/top.txt`, 't')
    await sbx.files.write(`${d}/sub/inner.txt`, 'i')
    await sbx.files.write(`${d}/sub/deeper/leaf.txt`, 'l')
    const one = await sbx.files.list(d)
    assert.deepEqual(one.map((e) => e.path).sort(), [`${d}/sub`, `${d}/top.txt`])
    assert.equal(one.find((e) => e.name === 'sub').type, FileType.DIR)
    assert.equal(one.find((e) => e.name === 'top.txt').type, FileType.FILE)
    const two = (await sbx.files.list(d, { depth: 2 })).map((e) => e.path).sort()
    assert.deepEqual(two, [`${d}/sub`, `${d}/sub/deeper`, `${d}/sub/inner.txt`, `${d}/top.txt`])
  })

  test('exists, makeDir, rename, remove, getInfo', T, async () => {
    const d = await dir()
    await sbx.files.write(`${d}/a.txt`, '12345')
    assert.equal(await sbx.files.exists(`${d}/a.txt`), true)
    assert.equal(await sbx.files.exists(`${d}/missing`), false)

    assert.equal(await sbx.files.makeDir(`${d}/x/y`), true)
    assert.equal(await sbx.files.makeDir(`${d}/x/y`), false)

    const moved = await sbx.files.rename(`${d}/a.txt`, `${d}/b.txt`)
    assert.equal(moved.path, `${d}/b.txt`)
    assert.equal(await sbx.files.exists(`${d}/a.txt`), false)

    const info = await sbx.files.getInfo(`${d}/b.txt`)
    assert.equal(info.name, 'b.txt')
    assert.equal(info.type, FileType.FILE)
    assert.equal(info.size, 5)
    assert.match(info.permissions, /^-rw/)
    assert.equal(info.owner, 'user')
    assert.ok(info.modifiedTime instanceof Date)
    assert.ok(Math.abs(info.modifiedTime.getTime() - Date.now()) < 120_000)

    await sbx.files.remove(`${d}/b.txt`)
    assert.equal(await sbx.files.exists(`${d}/b.txt`), false)
    await sbx.files.remove(`${d}/x`)
    assert.equal(await sbx.files.exists(`${d}/x`), false)
  })

  test('missing file errors', T, async () => {
    const d = await dir()
    await assert.rejects(sbx.files.read(`${d}/nope.txt`), FileNotFoundError)
    await assert.rejects(sbx.files.getInfo(`${d}/nope.txt`), FileNotFoundError)
  })

  test('watchDir sees a created file', T, async () => {
    const d = await dir()
    const events = []
    const handle = await sbx.files.watchDir(d, (e) => events.push(e), { timeoutMs: 60_000 })
    try {
      await sbx.files.write(`${d}/watched.txt`, 'w')
      await waitFor('CREATE event for watched.txt', () =>
        events.some((e) => e.name === 'watched.txt' && e.type === FilesystemEventType.CREATE)
      )
    } finally {
      await handle.stop()
    }
  })

  test('signed upload and download URLs with plain fetch', T, async () => {
    const d = await dir()
    const path = `${d}/uploaded.bin`
    const form = new FormData()
    form.append('file', new Blob([BINARY]), 'uploaded.bin')
    const up = await fetch(await sbx.uploadUrl(path), { method: 'POST', body: form })
    assert.equal(up.status, 200, await up.clone().text())
    const down = await fetch(await sbx.downloadUrl(path))
    assert.equal(down.status, 200)
    assert.deepEqual(Buffer.from(await down.arrayBuffer()), Buffer.from(BINARY))
  })
})
