// The Hono app in-process on real parts: a libSQL file, the filesystem store and the
// libSQL queue in a temp dir, one docker.io upstream, and a clock the test can move.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createApp } from '../../functions/app.ts';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { UpstreamRegistry, type UpstreamConfig } from '../../core/adapters/http-upstream.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import type { IngestDeps } from '../../core/cache/ingest.ts';

export interface TestApp {
  app: ReturnType<typeof createApp>;
  db: Database;
  store: FilesystemBlobStore;
  ingestDeps: IngestDeps;
  /** Moves the app's clock (tag TTLs) forward. */
  advance(ms: number): void;
  close(): Promise<void>;
}

export async function createTestApp(upstream: string | UpstreamConfig, tagTtlSeconds = 60): Promise<TestApp> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-app-'));
  const { db, close } = await openDatabase(`file:${join(dir, 'db.sqlite')}`);
  let now = Date.now();
  const store = new FilesystemBlobStore(join(dir, 'store'));
  const shared = {
    db,
    store,
    upstreams: new Map([['docker.io', new UpstreamRegistry('docker.io', typeof upstream === 'string' ? { url: upstream } : upstream, { attempts: 1 })]]),
    queue: new LibsqlJobQueue(db),
  };
  const manifests = { ...shared, tagTtlSeconds, now: () => now };
  const app = createApp({
    manifests,
    blobs: { ...shared, delivery: 'stream', presignTtlSeconds: 60 },
    routing: { upstreamHosts: new Set(['docker.io']), defaultUpstream: 'docker.io' },
    plan: { manifests, extract: 'on-demand', presignTtlSeconds: 60 },
    layers: { db, store, delivery: 'stream', presignTtlSeconds: 60 },
  });
  return {
    app,
    db,
    store,
    ingestDeps: { ...shared, leaseMs: 10_000 },
    advance: (ms) => void (now += ms),
    async close() {
      close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
