// The embedded single-machine server: one Node process with a libSQL file (or Turso),
// the filesystem or S3 blob store, the HTTP app, and ingest consumers on the libSQL queue.
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type RequestListener, type ServerOptions } from 'node:http';
import { mkdirSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { open, type FileHandle } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import type { SendFile } from '../functions/stored.ts';
import { replayKey, type ReplayRequest, type Replays } from '../functions/replay.ts';
import { parseConfig, ConfigError, type Config, type ConfigEnv } from '../core/config.ts';
import { openDatabase } from '../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../core/adapters/libsql-catalog.ts';
import { LibsqlJobQueue } from '../core/adapters/libsql-queue.ts';
import { FilesystemSpool } from '../core/adapters/fs-spool.ts';
import { whileLeased } from '../core/cache/lease.ts';
import { createApp } from '../functions/app.ts';
import { StoreUnavailableError, redactUrls } from '../core/oci/errors.ts';
import { buildDeps, storeFor } from './deps.ts';
import { handleJob } from './jobs.ts';
import { runGc } from '../core/cache/gc.ts';
import { PrometheusMetrics } from '../core/ports/metrics.ts';
import { nodeDecoders } from '../core/adapters/node-zlib.ts';

// Bundled as dist/server.mjs, one folder down like this file: schema/ is a sibling either way.
const MIGRATIONS = new URL('../schema/migrations', import.meta.url);

/**
 * The log: one JSON line per entry on stdout. The lines of one turn of the event loop go
 * out in one write, so that a busy server does not make a system call per request (the
 * access log was a tenth of a warm request's CPU); the rest is written when the process exits.
 */
let logLines: string[] = [];
const flushLog = () => {
  if (logLines.length === 0) return;
  const text = logLines.join('');
  logLines = [];
  process.stdout.write(text);
};
/** The line's opening with its `time` member, made once per millisecond (entries carry no `time` of their own). */
let timeMs = -1;
let timeMember = '';
const lineOpening = () => {
  const now = Date.now();
  if (now !== timeMs) {
    timeMs = now;
    timeMember = `{"time":"${new Date(now).toISOString()}"`;
  }
  return timeMember;
};
const log = (fields: Record<string, unknown>) => {
  const rest = JSON.stringify(fields);
  logLines.push(`${lineOpening()}${rest.length > 2 ? `,${rest.slice(1)}` : '}'}\n`);
  if (logLines.length === 1) setImmediate(flushLog);
};
process.on('exit', flushLog);

/** Bytes per read of a file sent from its descriptor: as the filesystem store reads. */
const SEND_CHUNK_BYTES = 1024 * 1024;

/**
 * A stored file's range written to the socket from its descriptor, with none of the
 * web-stream conversions of a Response body (on a 64 KiB blob they were most of the
 * request). The file is opened before the status goes out, so a file that is gone falls
 * back to the body (which fails the same way, cleanly). A client that goes away stops
 * the reads and closes the file; a file shorter than its row ends the connection.
 */
const sendFile: SendFile = async (c, file, status, headers) => {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  if (!outgoing || outgoing.headersSent) return undefined;
  let handle: FileHandle;
  try {
    handle = await open(file.path, 'r');
  } catch {
    return undefined;
  }
  outgoing.writeHead(status, headers);
  void sendRange(handle, outgoing, file.start, file.end)
    .catch(() => outgoing.destroy())
    .finally(() => handle.close().catch(() => {}));
  c.set('sentStatus', status);
  return RESPONSE_ALREADY_SENT;
};

/**
 * Bytes `start`..`end` (inclusive) of the file into the response through two buffers
 * used over and over: one is read into while the other is being written. A stream of the
 * file allocated a fresh buffer per read, and the page faults of those made the server's
 * CPU for a 200 MB blob twice what it is this way.
 */
async function sendRange(handle: FileHandle, res: ServerResponse, start: number, end: number): Promise<void> {
  const size = Math.min(SEND_CHUNK_BYTES, end - start + 1);
  const buffers = [Buffer.allocUnsafe(size), end - start + 1 > size ? Buffer.allocUnsafe(size) : undefined];
  // Each write settles with its error, if any (never rejects: nothing waits on it while the other buffer is read).
  const writing: Array<Promise<Error | undefined> | undefined> = [undefined, undefined];
  const closed = new Promise<'closed'>((resolve) => res.once('close', () => resolve('closed')));
  const settled = async (write: Promise<Error | undefined> | undefined) => {
    const outcome = await Promise.race([write, closed]);
    if (outcome instanceof Error) throw outcome;
    return outcome !== 'closed';
  };
  let at = start;
  for (let i = 0; at <= end; i ^= 1) {
    // The buffer is free once its last write has gone to the socket.
    if (!(await settled(writing[i]))) return;
    const { bytesRead } = await handle.read(buffers[i]!, 0, Math.min(size, end - at + 1), at);
    if (bytesRead === 0) throw new Error(`${at - start} of ${end - start + 1} bytes: the file ended early`);
    at += bytesRead;
    const piece = buffers[i]!.subarray(0, bytesRead);
    writing[i] = new Promise((resolve) => {
      const done = (e?: Error | null) => resolve(e ?? undefined);
      if (at > end) res.end(piece, done);
      else res.write(piece, done);
    });
  }
  for (const write of writing) if (!(await settled(write))) return;
}

/** What a kept answer depends on, read off a Node request. */
const replayRequestOf = (req: IncomingMessage): ReplayRequest => ({
  method: req.method,
  url: req.url,
  accept: req.headers.accept,
  authorization: req.headers.authorization,
  ranged: req.headers.range !== undefined,
});

/**
 * The server's request listener: a warm answer this process keeps (functions/replay.ts)
 * is written to the socket at once, before any of the app's work (Hono's own is most of
 * a warm request); everything else goes to the app.
 */
function replaying(replays: Replays | undefined, app: RequestListener): RequestListener {
  if (!replays) return app;
  return (req, res) => {
    const key = replayKey(replayRequestOf(req));
    const replay = key === undefined ? undefined : replays.find(key);
    if (!replay) return app(req, res);
    const started = performance.now();
    res.writeHead(200, replay.headers);
    res.end(replay.body);
    replays.served(replay, Math.round(performance.now() - started));
  };
}

/** A start-up failure: one line naming what to fix, exit status 2 (as for bad configuration). */
function fatal(message: string): never {
  console.error(`pullthrough: ${message}`);
  process.exit(2);
}

/** A database URL fit for a message: no credentials, no query. */
const shownUrl = (url: string) => url.replace(/\/\/[^/@]*@/, '//').replace(/\?.*$/, '');

async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.env as ConfigEnv);
  } catch (e) {
    if (e instanceof ConfigError) fatal(`bad configuration: ${e.message}`);
    throw e;
  }
  mkdirSync(config.dataDir, { recursive: true });
  const { db, close } = await openDatabase(config.libsqlUrl, config.libsqlAuthToken, MIGRATIONS).catch((e: unknown) =>
    fatal(`LIBSQL_URL: cannot open the database at ${shownUrl(config.libsqlUrl)}: ${redactUrls(causeOf(e))}`),
  );
  const store = storeFor(config);
  await store.check().catch((e: unknown) => {
    if (e instanceof StoreUnavailableError) {
      const where = Object.entries(e.context).map(([k, v]) => `${k} ${v}`).join(', ');
      fatal(`${e.variable}: the blob store cannot be used: ${e.problem}${where ? ` (${where})` : ''}`);
    }
    fatal(`the blob store cannot be used: ${redactUrls(causeOf(e))}`);
  });
  const queue = new LibsqlJobQueue(db);
  const spool = await FilesystemSpool.forProcess(join(config.dataDir, 'spool'));
  const deps = buildDeps(config, {
    catalog: new LibsqlCatalog(db),
    store,
    queue,
    spool,
    log,
    doneJobs: queue,
    metrics: new PrometheusMetrics(),
    jobCounts: () => queue.counts(),
    decoders: nodeDecoders,
    replayRequest: (c) => {
      const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
      return incoming && replayRequestOf(incoming);
    },
  });
  const app = createApp({ ...deps.app, sendFile });
  const tls = config.tlsCert && config.tlsKey ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) } : undefined;
  // The app's listener, behind the kept answers; over TLS when a certificate is configured.
  const createServer = (options: object, app: RequestListener) => {
    const listener = replaying(deps.replays, app);
    return tls ? createHttpsServer(options, listener) : createHttpServer(options, listener);
  };
  const server = serve({
    fetch: app.fetch,
    hostname: config.host,
    port: config.port,
    createServer: createServer as unknown as typeof createHttpServer,
    serverOptions: (tls ?? {}) as ServerOptions,
  });
  await new Promise<void>((resolve) => {
    server.once('listening', () => resolve());
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') fatal(`${config.host}:${config.port} is already in use (HOST, PORT): another server listens there`);
      if (e.code === 'EACCES') fatal(`${config.host}:${config.port} may not be bound by this user (HOST, PORT)`);
      if (e.code === 'EADDRNOTAVAIL') fatal(`${config.host} is not an address of this machine (HOST)`);
      fatal(`cannot listen on ${config.host}:${config.port}: ${e.message}`);
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log({ msg: 'listening', url: `${tls ? 'https' : 'http'}://${config.host}:${port}`, store: config.s3 ? 's3' : 'filesystem', pid: process.pid });
  if (config.auth.keysGenerated && (config.auth.users.size > 0 || config.auth.tokens.size > 0)) {
    log({ level: 'warn', msg: 'AUTH_TOKEN_KEYS is unset: tokens are signed with a key made at start, which other processes do not know and a restart forgets' });
  }

  // Job consumers: claim a job, run it, record the outcome. Leases make a crash safe.
  let stopping = false;
  const leaseMs = deps.ingest.leaseMs;
  const sleeping = new Set<() => void>();
  /** Jobs being run, by id, with their owner: released if they outlast the stop grace. */
  const running = new Map<number, string>();
  const consumer = async (n: number) => {
    const owner = `${process.pid}-${n}-${randomUUID()}`;
    while (!stopping) {
      const job = await queue.claim(owner, leaseMs).catch((e) => {
        log({ level: 'error', msg: 'queue claim failed', error: String(e) });
        return undefined;
      });
      if (!job) {
        await new Promise<void>((r) => {
          const wake = () => (clearTimeout(t), sleeping.delete(wake), r());
          const t = setTimeout(wake, 500);
          sleeping.add(wake);
        });
        continue;
      }
      running.set(job.id, owner);
      try {
        // The job's lease is held like every other: losing it stops the work it does.
        await whileLeased({ what: 'job', leaseMs, renew: () => queue.renew(job.id, owner, leaseMs) }, (signal) =>
          handleJob(deps, { kind: job.kind, payload: payloadOf(job.payload), attempt: job.attempts, owner, signal }, config.ingestMaxAttempts, queue.ackerFor(job, owner)),
        );
      } catch (e) {
        // The queue itself failed (the database is gone): the lease runs out and the job is run again.
        log({ level: 'error', msg: 'job could not be recorded', job: job.key, error: redactUrls(String(e)) });
      } finally {
        running.delete(job.id);
      }
    }
  };
  const consumers = Array.from({ length: config.ingestConcurrency }, (_, n) => consumer(n));

  // Garbage collection every GC_INTERVAL_SECONDS (the lease keeps it to one run across
  // processes sharing the database); the first one interval after start.
  const gcTimer =
    config.gcIntervalSeconds > 0
      ? setInterval(() => {
          if (stopping) return;
          runGc(deps.gc, { owner: `${process.pid}-gc-${randomUUID()}` }).catch((e: unknown) => log({ level: 'error', msg: 'gc failed', error: redactUrls(String(e)) }));
        }, config.gcIntervalSeconds * 1000)
      : undefined;
  gcTimer?.unref();
  // Pull counts and activity are also written every PULL_FLUSH_SECONDS when nothing is
  // pulled (a request due for a flush starts one itself).
  const flushTimer = config.pullFlushSeconds > 0 ? setInterval(() => void deps.pulls.flush(), config.pullFlushSeconds * 1000) : undefined;
  flushTimer?.unref();

  // Stop: accept nothing new, let requests and jobs finish within the grace, give back the
  // jobs still running (another process, or the next start, takes them at once), close
  // the database, exit 0. A second signal exits at once.
  const shutdown = async (signal: string) => {
    if (stopping) {
      log({ msg: 'stopping now', signal });
      process.exit(1);
    }
    stopping = true;
    clearInterval(gcTimer);
    clearInterval(flushTimer);
    log({ msg: 'stopping', signal, graceSeconds: config.stopGraceSeconds });
    for (const wake of [...sleeping]) wake();
    const closed = new Promise<void>((r) => server.close(() => r()));
    if ('closeIdleConnections' in server) server.closeIdleConnections();
    const grace = new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), config.stopGraceSeconds * 1000).unref());
    const finished = await Promise.race([Promise.all([closed, Promise.allSettled(consumers)]).then(() => 'done' as const), grace]);
    if (finished === 'timeout') {
      const jobs = [...running];
      await Promise.allSettled(jobs.map(([id, owner]) => queue.release(id, owner)));
      if ('closeAllConnections' in server) server.closeAllConnections();
      log({ msg: 'stop grace over', releasedJobs: jobs.length });
    }
    await deps.pulls.flush();
    close();
    log({ msg: 'stopped', signal });
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

/** A stored job's payload; a corrupt one reads as none, and handleJob refuses it (dead, not retried forever). */
function payloadOf(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * What really failed: the innermost cause (libSQL and the SDK wrap a refused connection in
 * "Failed query: …" and "fetch failed").
 */
function causeOf(e: unknown): string {
  let err = e as { message?: string; code?: unknown; cause?: unknown };
  while (err.cause && typeof err.cause === 'object') err = err.cause as typeof err;
  const code = typeof err.code === 'string' ? err.code : '';
  const message = err.message ?? String(err);
  return code && !message.includes(code) ? `${code} ${message}`.trim() : message;
}

await main();
