// A garbage-collection run killed with `kill -9` half-way through evicting thousands of
// blobs (the server process as `npm start` runs it, its store and libSQL file): every row
// that says ready still has its object; the blobs marked in the last MEMORY_CACHE_TTL_SECONDS
// (whose deletes were waiting it out) are left with their objects under evicted rows
// (invisible to clients; orphans once a day old), the lease runs out, and the next run
// finishes the job.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { gcServerEnv, seedStoredBlobs, type Seeded } from '../setup/seed.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';

const BLOBS = 3000;
const KEEP = 300;
let dir: string;
let seeded: Seeded;
let env: Record<string, string>;
let server: Server | undefined;
let db: Database;
let closeDb: () => void;

let admin: Record<string, string>;
const exists = (path: string) => stat(path).then(() => true, () => false);
const objectOf = (digest: string) => join(dir, 'store', 'blobs', 'sha256', digest.slice(7));
const rows = async () => db.all<{ digest: string; state: string }>(sql`SELECT digest, state FROM blobs`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-gc-crash-'));
  seeded = await seedStoredBlobs(dir, BLOBS);
  const gc = await gcServerEnv(dir, KEEP * seeded.size, 'gc-crash-pass');
  env = { ...gc.env, JOB_LEASE_SECONDS: '3' };
  admin = gc.admin;
  ({ db, close: closeDb } = await openDatabase(`file:${join(dir, 'pullthrough.db')}`));
});
after(async () => {
  await server?.stop('SIGKILL');
  closeDb?.();
  await rm(dir, { recursive: true, force: true });
});

test('kill -9 in the middle of a GC run: ready rows keep their objects; the lease runs out and the next run finishes, sweeping the objects left behind as orphans', async () => {
  server = await startServer(env);
  const run = fetch(`${server.url}/api/gc`, { method: 'POST', headers: admin }).catch(() => undefined);
  // Killed as soon as the run has evicted something, long before it has evicted 2,700 blobs.
  await until(async () => (await rows()).some((r) => r.state === 'evicted'), 60_000, 'the run evicting');
  server.child.kill('SIGKILL');
  await new Promise((resolve) => server!.child.once('exit', resolve));
  server = undefined;
  await run;

  const killed = await rows();
  const evicted = killed.filter((r) => r.state === 'evicted');
  assert.ok(evicted.length > 0 && evicted.length < BLOBS - KEEP, `killed mid-run: ${evicted.length} of ${BLOBS - KEEP} evicted`);
  for (const r of killed.filter((r) => r.state === 'ready')) assert.equal(await exists(objectOf(r.digest)), true, `ready ${r.digest} has its object`);
  const leftBehind = [];
  for (const r of evicted) if (await exists(objectOf(r.digest))) leftBehind.push(r.digest);
  assert.ok(leftBehind.length >= 1, 'the deletes waiting out the TTL were killed with the run');

  // The next server's run: refused while the dead run's lease lasts, then it finishes the job.
  server = await startServer(env);
  let report: { ran: boolean; totals: Record<string, { count: number }> } | undefined;
  await until(
    async () => {
      const res = await fetch(`${server!.url}/api/gc`, { method: 'POST', headers: admin });
      assert.ok(res.status === 200 || res.status === 409, `status ${res.status}`);
      report = res.status === 200 ? ((await res.json()) as typeof report) : undefined;
      return report !== undefined;
    },
    30_000,
    'a run once the lease ran out',
  );
  assert.equal(report!.totals.blob?.count, BLOBS - KEEP - evicted.length, 'the rest evicted');
  assert.equal(report!.totals.orphan?.count ?? 0, leftBehind.length, 'the objects the killed run left under evicted rows are orphans (written two days ago, as seeded)');
  const finished = await rows();
  assert.equal(finished.filter((r) => r.state === 'ready').length, KEEP, 'down to the cap');
  for (const r of finished) assert.equal(await exists(objectOf(r.digest)), r.state === 'ready', r.digest);

  await server.stop();
  server = undefined;
});
