// `npm run bench` (fourth part): one garbage-collection run of the real server process over
// 10,000 stored blobs, half of them past CACHE_MAX_BYTES, then a run with nothing to evict
// (what every hourly run costs: the bucket listed for orphans); the server's peak memory;
// against the floor of the same work, `rm` of the same 5,000 files.
import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gcServerEnv, seedStoredBlobs } from '../setup/seed.ts';
import { startServer } from '../setup/server.ts';
import { cleanups, hwmOf, report, runBench, seconds } from './harness.ts';

const BLOBS = 10_000;
const KEEP = 5_000;

await runBench(async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pt-bench-gc-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const data = join(dir, 'data');
  const seeded = await seedStoredBlobs(data, BLOBS);
  // The reference: the same 5,000 files removed by one `rm`, from a copy of the store.
  const copy = join(dir, 'copy');
  await cp(join(data, 'store', 'blobs', 'sha256'), copy, { recursive: true });
  const doomed = seeded.digests.slice(0, BLOBS - KEEP).map((d) => join(copy, d.slice(7)));
  const rmSeconds = await seconds(async () => execFileSync('xargs', ['rm', '-f'], { input: doomed.join('\n') }));

  const { env, admin: headers } = await gcServerEnv(data, KEEP * seeded.size, 'bench-gc');
  const server = await startServer(env);
  cleanups.push(() => server.stop());
  const idle = await hwmOf(server);
  let evicted = 0;
  const evicting = await seconds(async () => {
    const res = await fetch(`${server.url}/api/gc`, { method: 'POST', headers });
    evicted = ((await res.json()) as { totals: { blob?: { count: number } } }).totals.blob?.count ?? 0;
  });
  if (evicted !== BLOBS - KEEP) throw new Error(`the run evicted ${evicted}, not ${BLOBS - KEEP}`);
  const left = (await readdir(join(data, 'store', 'blobs', 'sha256'))).length;
  if (left !== KEEP) throw new Error(`${left} objects left, not ${KEEP}`);
  const sweeping = await seconds(async () => (await fetch(`${server.url}/api/gc`, { method: 'POST', headers })).arrayBuffer());
  const peak = await hwmOf(server);
  report(`GC: evict ${BLOBS - KEEP} of ${BLOBS} blobs (filesystem, libSQL file)`, `${evicting.toFixed(2)} s, ${((BLOBS - KEEP) / evicting).toFixed(0)} blobs/s`, `rm of the same files: ${rmSeconds.toFixed(2)} s`);
  report(`GC: a run with nothing to evict over ${KEEP} blobs (orphan listing, sweeps)`, `${sweeping.toFixed(2)} s`);
  report('GC: server peak RSS', `${peak.toFixed(0)} MB (idle ${idle.toFixed(0)} MB)`, 'bounded by page sizes, not by blob count');
});
