// The Hono app in-process on real parts, wired by workers/deps.ts as both runtimes are:
// a libSQL file, the filesystem store and the libSQL queue in a temp dir, one docker.io
// upstream, and a clock the test can move.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../functions/app.ts';
import { parseConfig } from '../../core/config.ts';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { FilesystemSpool } from '../../core/adapters/fs-spool.ts';
import { nodeDecoders } from '../../core/adapters/node-zlib.ts';
import type { UpstreamConfig } from '../../core/adapters/http-upstream.ts';
import type { IngestDeps } from '../../core/cache/ingest.ts';
import type { BlobStore } from '../../core/ports/blob-store.ts';
import type { TransferDeps } from '../../core/cache/transfer.ts';
import { buildDeps, type Deps } from '../../workers/deps.ts';
import { until } from './process.ts';

export interface TestApp {
  app: ReturnType<typeof createApp>;
  db: Database;
  store: BlobStore;
  /** The temp directory holding the database, the store (`store/`) and the spool. */
  dir: string;
  deps: Deps;
  ingestDeps: IngestDeps;
  /** Moves the app's clock (tag TTLs, pull-count batches) forward. */
  advance(ms: number): void;
  close(): Promise<void>;
}

export interface TestAppOptions {
  /** Another store than the filesystem one in the temp dir; with `spool: false`, wired as a Worker is (no spool). */
  store?: BlobStore;
  spool?: boolean;
  /** More configuration variables (AUTH_*, COLD_RATE_PER_MINUTE, …). */
  env?: Record<string, string>;
}

export async function createTestApp(upstream: string | UpstreamConfig, tagTtlSeconds = 60, transfer?: Pick<TransferDeps, 'stallMs' | 'resumes' | 'pollMs'>, options: TestAppOptions = {}): Promise<TestApp> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-app-'));
  const { db, close } = await openDatabase(`file:${join(dir, 'db.sqlite')}`);
  let now = Date.now();
  const clock = () => now;
  const upstreamConfig = typeof upstream === 'string' ? { url: upstream } : upstream;
  const config = parseConfig({
    DATA_DIR: dir,
    UPSTREAMS: JSON.stringify({ 'docker.io': upstreamConfig }),
    TAG_TTL_SECONDS: String(tagTtlSeconds),
    PRESIGN_TTL_SECONDS: '60',
    JOB_LEASE_SECONDS: '10',
    ...options.env,
  });
  const store = options.store ?? new FilesystemBlobStore(join(dir, 'store'));
  const queue = new LibsqlJobQueue(db, clock);
  const deps = buildDeps(config, {
    catalog: new LibsqlCatalog(db),
    store,
    queue,
    doneJobs: queue,
    // Wired as Node is (a spool, zlib's decoders), or, with `spool: false`, as a Worker is.
    ...(options.spool === false ? {} : { spool: await FilesystemSpool.forProcess(join(dir, 'spool')), decoders: nodeDecoders }),
    log: process.env.PT_TEST_LOG ? (e) => console.error(JSON.stringify(e)) : () => {},
    clock,
    upstream: { attempts: 1 },
    ...(transfer ? { transfer } : {}),
  });
  return {
    app: createApp(deps.app),
    db,
    store,
    dir,
    deps,
    ingestDeps: deps.ingest,
    advance: (ms) => void (now += ms),
    async close() {
      // A transfer whose client has its last byte still renames into the store and marks
      // the row ready: let it finish before the directory goes (rm would race the rename).
      // (A transfer a test left stalled on purpose is not waited for past the deadline.)
      await until(async () => deps.app.blobs.transfers.stats().inFlight === 0, 30_000, 'the transfers of the test app to end').catch(() => {});
      close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
