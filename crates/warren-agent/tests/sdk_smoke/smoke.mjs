// Smoke test of a single agent with the unmodified E2B JS SDK in debug mode; see smoke.py.
// Node resolves `e2b` from the script location: copy it into compat/js/ (which has
// node_modules after scripts/compat-setup.sh) and run it with node from there.
import { Sandbox, CommandExitError } from 'e2b'
const assert = (c, m) => { if (!c) { throw new Error('assert: ' + m) } }
const sb = await Sandbox.create({ debug: true })
let r = await sb.commands.run('echo hi; echo err >&2')
assert(r.stdout === 'hi\n' && r.stderr === 'err\n' && r.exitCode === 0, JSON.stringify(r))
try { await sb.commands.run('exit 3'); assert(false, 'no throw') } catch (e) { assert(e instanceof CommandExitError && e.exitCode === 3, e) }
const h = await sb.commands.run('sleep 30', { background: true })
assert((await sb.commands.list()).some(p => p.pid === h.pid), 'list')
assert(await sb.commands.kill(h.pid), 'kill')
assert(!(await sb.commands.kill(999999)), 'kill missing')
await sb.files.write('jsmoke/a.txt', 'hello')
assert(await sb.files.read('jsmoke/a.txt') === 'hello', 'read')
await sb.files.write([{ path: 'jsmoke/b.txt', data: 'B' }, { path: 'jsmoke/c/d.txt', data: 'D' }])
const names = (await sb.files.list('jsmoke')).map(e => e.name).sort()
assert(JSON.stringify(names) === '["a.txt","b.txt","c"]', names)
assert(await sb.files.exists('jsmoke/a.txt') && !(await sb.files.exists('nope')), 'exists')
assert(await sb.files.makeDir('jsmoke/n') === true, 'mkdir1')
assert(await sb.files.makeDir('jsmoke/n') === false, 'mkdir2')
const info = await sb.files.getInfo('jsmoke/a.txt')
assert(info.size === 5 && info.type === 'file', JSON.stringify(info))
await sb.files.write('jsmoke/empty.txt', '')
assert(await sb.files.read('jsmoke/empty.txt') === '', 'empty')
const evs = []
const w = await sb.files.watchDir('/tmp', (e) => evs.push(e))
await sb.files.write('/tmp/jsmoke-watch.txt', 'x')
await new Promise(r => setTimeout(r, 300))
await w.stop()
assert(evs.some(e => e.name === 'jsmoke-watch.txt'), JSON.stringify(evs))
await sb.files.remove('jsmoke')
let out = ''
const t = await sb.pty.create({ cols: 80, rows: 24, onData: (d) => { out += new TextDecoder().decode(d) } })
await sb.pty.resize(t.pid, { cols: 100, rows: 40 })
await sb.pty.sendInput(t.pid, new TextEncoder().encode('stty size; exit\n'))
await t.wait()
assert(out.includes('40 100'), out)
assert(await sb.isRunning(), 'running')
console.log('JS SMOKE OK')
