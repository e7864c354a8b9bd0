// `npm run bench` (part): the cold path through a WAN stand-in (40 ms RTT, 30 MB/s per
// connection, test/setup/wan.ts) between the mirror and the upstream. N = 1, 4 and 8
// concurrent skopeo pulls of a cold 200 MB image, through pullthrough (filesystem store,
// and S3) and through Debian's distribution in proxy mode, measured in the same run:
// upstream bytes ÷ image bytes (counted at the link, ingest included) and the slowest
// client's time ÷ one direct pull over the same link. Targets are issue 12's.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../../core/adapters/libsql-catalog.ts';
import { startRegistry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { skopeoPull } from '../setup/clients.ts';
import { startWan } from '../setup/wan.ts';
import { MB, cleanups, hwmOf, median, report, runBench, seconds } from './harness.ts';

const LINK = { rttMs: 40, bytesPerSecond: 30 * MB };
/** Concurrent pulls measured; BENCH_COLD_CLIENTS=8 measures one of them. */
const CLIENTS = process.env.BENCH_COLD_CLIENTS ? process.env.BENCH_COLD_CLIENTS.split(',').map(Number) : [1, 4, 8];
const DIRECT_RUNS = 3;

const allBlobs = (image: BuiltImage) => [image.configDigest, ...image.layers.map((l) => l.digest)];

async function main(): Promise<void> {
  if (!process.env.S3_TEST_ENDPOINT) throw new Error('run through `npm run bench`, which starts Ceph RGW');
  const scratch = await mkdtemp(join(tmpdir(), 'pt-cold-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());
  console.error('building the 200 MB image');
  const image = await pushImage(registry, 'library/big', '1', [{ 'etc/big': 'big\n' }, { 'big.bin': randomBytes(200 * MB) }]);
  const imageBytes = image.layers.reduce((n, l) => n + l.size, 0);
  const [host, port] = registry.host.split(':') as [string, string];
  const wan = await startWan({ host, port: Number(port) }, LINK);
  cleanups.push(() => wan.stop());
  let runs = 0;
  // Each run's copies are deleted once timed: gigabytes of dirty pages left behind slow
  // every later run's writes on this VM's disk (the 8-client runs took 2–3× longer).
  const pulls = async (through: string, n: number) => {
    const dirs = Array.from({ length: n }, () => join(scratch, 'pulls', String(runs++)));
    try {
      return await Promise.all(dirs.map((d) => seconds(() => skopeoPull(through, 'library/big:1', d))));
    } finally {
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    }
  };

  console.error(`direct pulls over the link (${LINK.rttMs} ms RTT, ${LINK.bytesPerSecond / MB} MB/s per connection)`);
  const directRuns: number[] = [];
  for (let i = 0; i < DIRECT_RUNS; i++) directRuns.push((await pulls(wan.host, 1))[0]!);
  const direct = median(directRuns);
  report('direct cold pull over the link (skopeo, median of 3)', `${direct.toFixed(2)} s`);

  type Target = { label: string; start(name: string): Promise<{ host: string; settled(): Promise<void>; stop(): Promise<void>; peakRss?(): Promise<number> }> };
  const pullthrough = (env: (name: string) => Promise<Record<string, string>>): Target['start'] => async (name) => {
    const dataDir = join(scratch, name);
    const s = await startServer({ DATA_DIR: dataDir, UPSTREAMS: JSON.stringify({ 'docker.io': { url: wan.url } }), ...(await env(name)) });
    return {
      host: s.host,
      // Everything the mirror fetches counts, its ingest jobs included.
      async settled() {
        const { db, close } = await openDatabase(`file:${join(dataDir, 'pullthrough.db')}`);
        const catalog = new LibsqlCatalog(db);
        try {
          await until(async () => (await Promise.all(allBlobs(image).map((d) => catalog.blob(d)))).every((b) => b?.state === 'ready'), 600_000, `ingest on ${name}`);
        } finally {
          close();
        }
      },
      stop: () => s.stop(),
      // Memory per attached client is one read buffer: the peak should not grow with N.
      peakRss: () => hwmOf(s),
    };
  };
  const targets: Target[] = [
    { label: 'pullthrough, filesystem', start: pullthrough(async () => ({})) },
    { label: 'pullthrough, S3', start: pullthrough(async (name) => ({ ...s3ServerEnv((await s3TestBucket(name))!.bucket), BLOB_DELIVERY: 'redirect' })) },
    {
      label: 'distribution proxy',
      async start() {
        const proxy = await startRegistry({ proxy: { remoteUrl: wan.url } });
        return { host: proxy.host, settled: async () => {}, stop: () => proxy.stop() };
      },
    },
  ];
  for (const n of CLIENTS) {
    for (const target of targets) {
      const t = await target.start(`cold-${n}-${target.label.toLowerCase().replace(/[^a-z0-9]+/g, '-')}`);
      try {
        wan.reset();
        const times = await pulls(t.host, n);
        await t.settled();
        const slowest = Math.max(...times);
        const bytes = wan.bytesFromFar() / imageBytes;
        const rss = t.peakRss ? `, server peak RSS ${(await t.peakRss()).toFixed(0)} MB` : '';
        const targets = n === 1 ? 'targets ≤ 1.05× bytes, ≤ 1.05× direct' : n === 8 ? 'targets ≤ 1.05× bytes, slowest ≤ 1.25× direct' : 'target ≤ 1.05× bytes';
        report(`${n} cold pull${n > 1 ? 's' : ''} at once, ${target.label}`, `upstream ${bytes.toFixed(2)}× the image, slowest ${slowest.toFixed(2)} s = ${(slowest / direct).toFixed(2)}× direct${rss}`, target.label.startsWith('pullthrough') ? targets : 'reference');
      } finally {
        await t.stop();
      }
    }
  }
}

await runBench(main);
