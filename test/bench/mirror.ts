// `npm run bench`: pull and ingest numbers on real components (Debian's docker-registry
// upstream, Ceph RGW, the real server process), printed as a table with the targets.
// Runs under test/setup/with-components.sh, which starts Ceph RGW and exports S3_TEST_*.
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { eq } from 'drizzle-orm';
import { Upload } from '@aws-sdk/lib-storage';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { blobs } from '../../schema/blobs.ts';
import { startRegistry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { skopeoPull } from '../setup/clients.ts';
import { startHranaServer } from '../setup/hrana-server.ts';
import { startLocalWorker } from '../setup/worker.ts';
import { watchIsolateMemory } from '../setup/isolate-memory.ts';
import { MB, cleanups, hwmOf, jobRate, median, report, runBench, seconds } from './harness.ts';

const PART_SIZE = 5 * 1024 * 1024; // the server's defaults, so the baseline is like for like
const QUEUE_SIZE = 2;
const RUNS = 5;

/** MB/s of the server's own ingest of `digest`, from its log line. */
const ingestRate = (s: Server, digest: string) => jobRate(s, 'ingest', 'digest', digest);

const allBlobs = (image: BuiltImage) => [image.configDigest, ...image.layers.map((l) => l.digest)];
const biggest = (image: BuiltImage) => image.layers.reduce((a, b) => (b.size > a.size ? b : a));

async function main(): Promise<void> {
  if (!process.env.S3_TEST_ENDPOINT) throw new Error('run through `npm run bench`, which starts Ceph RGW');
  const scratch = await mkdtemp(join(tmpdir(), 'pt-bench-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());
  const server = async (name: string, env: Record<string, string>): Promise<Server> => {
    const s = await startServer({ DATA_DIR: join(scratch, name), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }), ...env });
    cleanups.push(() => s.stop());
    return s;
  };
  const waitReady = async (name: string, digests: string[]): Promise<void> => {
    const { db, close } = await openDatabase(`file:${join(scratch, name, 'pullthrough.db')}`);
    try {
      await until(async () => {
        const states = await Promise.all(digests.map(async (d) => (await db.select().from(blobs).where(eq(blobs.digest, d)))[0]?.state));
        return states.every((s) => s === 'ready');
      }, 600_000, `ingest on ${name}`);
    } finally {
      close();
    }
  };
  const upstreamBody = async (image: BuiltImage, name: string) => {
    const res = await fetch(`${registry.url}/v2/${name}/blobs/${biggest(image).digest}`);
    return Readable.fromWeb(res.body! as never);
  };
  console.error('building images: 200 MB (gzip) and 1 GiB (uncompressed) random layers');
  const big = await pushImage(registry, 'library/big', '1', [{ 'etc/big': 'big\n' }, { 'big.bin': randomBytes(200 * MB) }]);
  const huge = await pushImage(registry, 'library/huge', '1', [{ 'huge.bin': randomBytes(1024 * MB) }], { compression: 'none' });
  const pull = (host: string, tag: string) => skopeoPull(host, 'library/big:1', join(scratch, 'pulls', tag));

  console.error('pull of the 200 MB image');
  const directRuns: number[] = [];
  const direct = async () => directRuns.push(await seconds(() => pull(registry.host, `direct-${directRuns.length}`)));

  for (const [label, name, env, theirStorage] of [
    ['S3, redirect', 'mirror-s3', { ...s3ServerEnv((await s3TestBucket('bench-pull'))!.bucket), BLOB_DELIVERY: 'redirect' }, 's3'],
    ['filesystem, stream', 'mirror-fs', {}, 'filesystem'],
  ] as const) {
    const s = await server(name, env);
    report(`cold through the mirror (${label})`, `${(await seconds(() => pull(s.host, `${name}-cold`))).toFixed(2)} s`);
    await waitReady(name, allBlobs(big));
    // Distribution in proxy mode on the same kind of storage (S3: the same RGW, its blob GETs redirected to it), warmed by one pull.
    const theirBucket = theirStorage === 's3' ? (await s3TestBucket('bench-proxy'))!.bucket : undefined;
    const proxy = await startRegistry({
      proxy: { remoteUrl: registry.url },
      ...(theirBucket
        ? { s3: { endpoint: process.env.S3_TEST_ENDPOINT!, bucket: theirBucket, accessKeyId: process.env.S3_TEST_ACCESS_KEY_ID!, secretAccessKey: process.env.S3_TEST_SECRET_ACCESS_KEY! } }
        : {}),
    });
    cleanups.push(() => proxy.stop());
    await pull(proxy.host, `${name}-proxy-cold`);
    await pull(proxy.host, `${name}-proxy-warm-up`);
    // Direct, warm and distribution pulls alternate, so drift on the machine hits all alike.
    const warm: number[] = [];
    const theirs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      await direct();
      warm.push(await seconds(() => pull(s.host, `${name}-warm-${i}`)));
      theirs.push(await seconds(() => pull(proxy.host, `${name}-proxy-${i}`)));
    }
    const ratio = median(warm) / median(directRuns);
    const vsTheirs = median(warm) / median(theirs);
    report(`warm through the mirror (${label}, median of ${RUNS})`, `${median(warm).toFixed(2)} s = ${ratio.toFixed(2)}× direct, ${vsTheirs.toFixed(2)}× distribution`, `target ≤ 1.0× distribution: ${vsTheirs <= 1 ? 'met' : 'MISSED'}`);
    report(`warm through distribution's proxy (${label === 'S3, redirect' ? 'S3, redirect' : 'filesystem'}, median of ${RUNS})`, `${median(theirs).toFixed(2)} s`);
    await proxy.stop();
    await s.stop();
  }

  report(`direct from the upstream (skopeo, median of ${directRuns.length})`, `${median(directRuns).toFixed(2)} s`);

  console.error('ingest throughput of the 200 MB layer (manifest fetched, no client pull)');
  const layer = biggest(big);
  const bucket = (await s3TestBucket('bench-baseline'))!;
  const baseline = await seconds(async () => {
    const upload = new Upload({ client: bucket.client, params: { Bucket: bucket.bucket, Key: 'baseline', Body: await upstreamBody(big, 'library/big') }, partSize: PART_SIZE, queueSize: QUEUE_SIZE });
    await upload.done();
  });
  const baselineRate = layer.size / MB / baseline;
  report('plain lib-storage upload, upstream → S3 (same part and queue size)', `${baselineRate.toFixed(1)} MB/s`);
  const s3Ingest = await server('ingest-s3', s3ServerEnv((await s3TestBucket('bench-ingest'))!.bucket));
  await (await fetch(`${s3Ingest.url}/v2/big/manifests/1`)).arrayBuffer();
  await waitReady('ingest-s3', allBlobs(big));
  const s3Rate = await ingestRate(s3Ingest, layer.digest);
  const share = s3Rate / baselineRate;
  report('pullthrough ingest into S3', `${s3Rate.toFixed(1)} MB/s = ${(share * 100).toFixed(0)}% of plain lib-storage`, `target ≥ 80%: ${share >= 0.8 ? 'met' : 'MISSED'}`);
  report(`server peak RSS during a ${(layer.size / MB).toFixed(0)} MB ingest into S3`, `${(await hwmOf(s3Ingest)).toFixed(0)} MB`);
  await s3Ingest.stop();

  const fileBaseline = await seconds(async () => {
    await pipeline(await upstreamBody(big, 'library/big'), createWriteStream(join(scratch, 'baseline.bin'), { flush: true }));
  });
  report('plain download, upstream → local file', `${(layer.size / MB / fileBaseline).toFixed(1)} MB/s`);
  const fsIngest = await server('ingest-fs', {});
  await (await fetch(`${fsIngest.url}/v2/big/manifests/1`)).arrayBuffer();
  await waitReady('ingest-fs', allBlobs(big));
  report('pullthrough ingest into the filesystem store', `${(await ingestRate(fsIngest, layer.digest)).toFixed(1)} MB/s`);
  await fsIngest.stop();

  // Peak RSS: the defaults, and twice the parts, twice as large.
  for (const [partMiB, queue] of [[PART_SIZE / MB, QUEUE_SIZE], [8, 4]] as const) {
    console.error(`peak RSS while ingesting a 1 GiB blob into S3 (${partMiB} MiB parts × ${queue})`);
    const name = `rss-${partMiB}x${queue}`;
    const s = await server(name, {
      ...s3ServerEnv((await s3TestBucket('bench-rss'))!.bucket),
      INGEST_PART_SIZE_BYTES: String(partMiB * MB),
      INGEST_QUEUE_SIZE: String(queue),
    });
    const idle = await hwmOf(s);
    await (await fetch(`${s.url}/v2/huge/manifests/1`)).arrayBuffer();
    await waitReady(name, allBlobs(huge));
    const peak = await hwmOf(s);
    const what = `server peak RSS, 1 GiB ingest into S3, ${partMiB} MiB parts × ${queue} (idle ${idle.toFixed(0)} MB)`;
    const defaults = partMiB * MB === PART_SIZE && queue === QUEUE_SIZE;
    report(what, `${peak.toFixed(0)} MB at ${(await ingestRate(s, biggest(huge).digest)).toFixed(1)} MB/s`, defaults ? `target ≤ 200 MB: ${peak <= 200 ? 'met' : 'MISSED'}` : 'for comparison');
    await s.stop();
  }

  console.error('the Worker build: ingest in local workerd');
  await workerBench(registry.url, scratch, [['big', big], ['huge', huge]]);
}

/** Peak RSS (VmHWM, MB) of each workerd process this bench started. */
async function workerdPeaks(): Promise<number[]> {
  const peaks: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    if (!/^Name:\s+workerd$/m.test(status)) continue;
    let ppid = Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]);
    while (ppid > 1 && ppid !== process.pid) ppid = Number(/^PPid:\s+(\d+)/m.exec(await readFile(`/proc/${ppid}/status`, 'utf8').catch(() => ''))?.[1] ?? 0);
    if (ppid === process.pid) peaks.push(Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024);
  }
  return peaks;
}

/** The Worker build in local workerd: ingest of the same layers through its queue consumer. */
async function workerBench(registryUrl: string, scratch: string, images: Array<[string, BuiltImage]>): Promise<void> {
  const hrana = await startHranaServer(join(scratch, 'turso.sqlite'));
  cleanups.push(() => hrana.stop());
  const { db, close } = await openDatabase(hrana.url, hrana.authToken);
  cleanups.push(async () => close());
  const worker = await startLocalWorker({
    inspector: true, // to read the isolate's memory
    persistDir: join(scratch, 'wrangler-state'),
    vars: {
      LIBSQL_URL: hrana.url,
      LIBSQL_AUTH_TOKEN: hrana.authToken,
      ...s3ServerEnv((await s3TestBucket('bench-worker'))!.bucket),
      S3_REGION: 'us-east-1',
      UPSTREAMS: JSON.stringify({ 'docker.io': { url: registryUrl } }),
    },
  });
  cleanups.push(() => worker.dispose());
  for (const [name, image] of images) {
    const layer = biggest(image);
    const memory = await watchIsolateMemory(worker.inspectorUrl!);
    const took = await seconds(async () => {
      await (await fetch(new URL(`/v2/${name}/manifests/1`, worker.url))).arrayBuffer();
      await until(async () => (await db.select().from(blobs).where(eq(blobs.digest, layer.digest)))[0]?.state === 'ready', 600_000, `worker ingest of ${name}`);
    });
    await memory.stop();
    const peak = Math.max(...(await workerdPeaks()));
    const isolate = memory.livePeak() / MB;
    report(`Worker (workerd): ${(layer.size / MB).toFixed(0)} MB ingest into S3, request to ready`, `${(layer.size / MB / took).toFixed(1)} MB/s, workerd process peak RSS so far ${peak.toFixed(0)} MB`);
    report(`Worker isolate memory (V8 heap + buffers), ${(layer.size / MB).toFixed(0)} MB ingest`, memory.describe(), `limit 128 MB live: ${isolate < 128 ? 'met' : 'MISSED'}`);
  }
}

await runBench(main);
