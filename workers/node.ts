// The embedded single-machine server: one Node process with a libSQL file (or Turso),
// the filesystem or S3 blob store, the HTTP app, and ingest consumers on the libSQL queue.
import { createServer as createHttpsServer } from 'node:https';
import { mkdirSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import { serve } from '@hono/node-server';
import { parseConfig, ConfigError, type Config } from '../core/config.ts';
import { openDatabase } from '../core/db.ts';
import { LibsqlJobQueue, backoffMs } from '../core/jobs.ts';
import { createApp } from '../functions/app.ts';
import { buildDeps, runJob, storeFor } from './deps.ts';

const log = (fields: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...fields }));

async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.env);
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`pullthrough: bad configuration: ${e.message}`);
      process.exit(2);
    }
    throw e;
  }
  mkdirSync(config.dataDir, { recursive: true });
  const { db, close } = await openDatabase(config.libsqlUrl, config.libsqlAuthToken);
  const queue = new LibsqlJobQueue(db);
  const deps = buildDeps(config, { db, store: storeFor(config), queue, log });
  const app = createApp(deps.app);
  const tls = config.tlsCert && config.tlsKey ? { cert: readFileSync(config.tlsCert), key: readFileSync(config.tlsKey) } : undefined;
  const server = serve({
    fetch: app.fetch,
    hostname: config.host,
    port: config.port,
    ...(tls ? { createServer: createHttpsServer, serverOptions: tls } : {}),
  });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log({ msg: 'listening', url: `${tls ? 'https' : 'http'}://${config.host}:${port}`, store: config.s3 ? 's3' : 'filesystem' });

  // Job consumers: claim a job, run it, record the outcome. Leases make a crash safe.
  let stopping = false;
  const leaseMs = deps.ingest.leaseMs;
  const sleeping = new Set<() => void>();
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
      const renew = setInterval(() => void queue.renew(job.id, owner, leaseMs).catch(() => {}), Math.floor(leaseMs / 3));
      try {
        const result = await runJob(deps, { kind: job.kind, payload: JSON.parse(job.payload) }, owner, job.attempts);
        if (result.ok) {
          await queue.complete(job.id, owner);
        } else {
          const state = await queue.fail(job.id, owner, result.error, { retry: result.retry, maxAttempts: config.ingestMaxAttempts });
          log({ level: 'warn', msg: `${job.kind} failed`, ...result.subject, error: result.error, attempt: job.attempts, state, retryInMs: state === 'retrying' ? backoffMs(job.attempts) : undefined });
        }
      } catch (e) {
        log({ level: 'error', msg: `${job.kind} crashed`, job: job.key, error: String(e) });
        await queue.fail(job.id, owner, String(e), { retry: true, maxAttempts: config.ingestMaxAttempts }).catch(() => {});
      } finally {
        clearInterval(renew);
      }
    }
  };
  const consumers = Array.from({ length: config.ingestConcurrency }, (_, n) => consumer(n));

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log({ msg: 'stopping', signal });
    for (const wake of [...sleeping]) wake();
    server.close();
    await Promise.allSettled(consumers);
    close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

await main();
