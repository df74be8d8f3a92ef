// Helpers shared by the E2B JS SDK compatibility tests: suite defaults, a preflight that
// fails fast with a clear message when no server is reachable, sandbox creation with
// guaranteed teardown, and polling with deadlines (VMs run under emulation, so anything
// asynchronous is awaited by polling rather than by fixed sleeps).
//
// The suite never starts a server: E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY come from
// the environment, where the SDK reads them too.
import net from 'node:net'
import { randomUUID } from 'node:crypto'
import { Sandbox } from 'e2b'

// Sandbox lifetime on the server: long enough for any file of this suite.
export const SANDBOX_LIFETIME_MS = 600_000
// Per-request timeout for control-plane calls (create boots a VM) and envd calls.
export const REQUEST_TIMEOUT_MS = 60_000
// Template to boot; unset means the SDK default ("base").
export const TEMPLATE = process.env.WARREN_COMPAT_TEMPLATE || undefined
// A value unique to this process, put into metadata to find our own sandboxes.
export const RUN_TAG = `run-${randomUUID().slice(0, 12)}`

const REQUIRED_ENV = ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']

function canConnect(url) {
  return new Promise((resolve) => {
    const port = Number(url.port) || (url.protocol === 'https:' ? 443 : 80)
    const socket = net.connect({ host: url.hostname, port, timeout: 5000 })
    socket.once('connect', () => {
      socket.destroy()
      resolve(null)
    })
    socket.once('timeout', () => {
      socket.destroy()
      resolve('connect timed out')
    })
    socket.once('error', (err) => resolve(err.message))
  })
}

let preflightResult
// Throws a clear error when the environment points at no server. Cached per process.
export function preflight() {
  preflightResult ??= (async () => {
    const missing = REQUIRED_ENV.filter((n) => !process.env[n])
    if (missing.length) {
      throw new Error(`compat: set ${missing.join(', ')} (a running Warren server)`)
    }
    for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL']) {
      let url
      try {
        url = new URL(process.env[name])
      } catch {
        throw new Error(`compat: ${name}=${process.env[name]} is not a URL`)
      }
      const problem = await canConnect(url)
      if (problem) {
        throw new Error(
          `compat: cannot connect to ${name}=${url.href} (${problem}); is \`warren serve\` running?`
        )
      }
    }
  })()
  return preflightResult
}

// Sandbox.create with this suite's defaults; `opts` override them.
export async function createSandbox(opts = {}) {
  await preflight()
  const { template = TEMPLATE, ...rest } = opts
  const full = { timeoutMs: SANDBOX_LIFETIME_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS, ...rest }
  return template ? Sandbox.create(template, full) : Sandbox.create(full)
}

// Teardown helper: kills a sandbox and ignores errors (the test already reported).
export async function killQuietly(sbx) {
  if (!sbx) return
  try {
    await sbx.kill({ requestTimeoutMs: REQUEST_TIMEOUT_MS })
  } catch {
    // already gone or unreachable; nothing left to clean up from here
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// Polls `probe` until it returns something truthy and returns that; throws after
// `timeoutMs` with the last value or error, so slow paths show what they saw.
export async function waitFor(what, probe, { timeoutMs = 20_000, intervalMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs
  let last
  for (;;) {
    try {
      const value = await probe()
      if (value) return value
      last = value
    } catch (err) {
      last = err
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last}`)
    }
    await sleep(intervalMs)
  }
}

// Every page of a paginator (Sandbox.list / Sandbox.listSnapshots) as one array.
export async function allItems(paginator, maxPages = 100) {
  const items = []
  for (let i = 0; i < maxPages && paginator.hasNext; i++) {
    items.push(...(await paginator.nextItems()))
  }
  if (paginator.hasNext) throw new Error(`paginator did not end after ${maxPages} pages`)
  return items
}
