// `npm run bench` (second part): pre-extracted layers on real components (Debian's
// docker-registry upstream, Ceph RGW, the real server process): extraction throughput for
// gzip and zstd layers, and the time to a ready root filesystem with `pullthrough rootfs`
// from a warm cache against `skopeo copy` + `umoci unpack` straight from the upstream.
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync } from 'node:fs';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Upload } from '@aws-sdk/lib-storage';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { blobKey } from '../../core/oci/keys.ts';
import { parseDigest } from '../../core/oci/reference.ts';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { pullthroughRootfs, readyPlan, umociRootfs } from '../setup/rootfs.ts';
import { MB, cleanups, hwmOf, jobRate, median, report, runBench, seconds } from './harness.ts';

const RUNS = 5;

/** File content that compresses about 2:1, like binaries and text in a real image. */
function content(size: number): Buffer {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog; pullthrough layer bench\n'.repeat(64));
  const out = Buffer.allocUnsafe(size);
  for (let at = 0; at < size; at += 8192) {
    const piece = (at / 8192) % 2 === 0 ? randomBytes(Math.min(8192, size - at)) : text.subarray(0, Math.min(8192, size - at));
    piece.copy(out, at);
  }
  return out;
}

/**
 * A layer tar (GNU tar, PAX) of `files` files totalling about `bytes`, in nested
 * directories. Layers share directories but add their own files, as most image layers do.
 */
async function layerOf(trees: string, name: string, files: number, bytes: number): Promise<{ tar: Buffer }> {
  const root = join(trees, name);
  // Sizes skewed like a real root filesystem: most files small, a few large.
  const weights = Array.from({ length: files }, (_, i) => 1 / (1 + (i % 97)) ** 1.5);
  const total = weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 23}`, `s${i % 7}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, `${name}-${i}`), content(Math.max(1, Math.round((weights[i]! / total) * bytes))));
  }
  const tar = execFileSync('tar', ['--format=pax', '--sort=name', '-C', root, '-cf', '-', '.'], { maxBuffer: 2 * 1024 * MB });
  await rm(root, { recursive: true, force: true });
  return { tar };
}

/** The stored blob from the bucket through `<compression> -dc` into a plain lib-storage upload (5 MiB parts, 2 at once, as the server). */
async function nativeCopy(bucket: NonNullable<Awaited<ReturnType<typeof s3TestBucket>>>, digest: string, compression: 'gzip' | 'zstd'): Promise<void> {
  const object = await bucket.client.send(new GetObjectCommand({ Bucket: bucket.bucket, Key: blobKey(parseDigest(digest)) }));
  const decoder = spawn(compression, ['-dc'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => decoder.once('exit', resolve));
  const fed = pipeline(object.Body as Readable, decoder.stdin);
  await new Upload({ client: bucket.client, params: { Bucket: bucket.bucket, Key: 'bench/native.tar', Body: decoder.stdout }, partSize: 5 * MB, queueSize: 2 }).done();
  await fed;
  const code = await exited;
  if (code !== 0) throw new Error(`${compression} -dc exited ${code}`);
}

async function main(): Promise<void> {
  if (!process.env.S3_TEST_ENDPOINT) throw new Error('run through `npm run bench`, which starts Ceph RGW');
  const scratch = await mkdtemp(join(tmpdir(), 'pt-bench-layers-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  // Source trees for the layers are made and deleted on tmpfs when there is one. On this
  // VM's ext4 (no journal), deleting thousands of files makes creating files in the next
  // minutes cost far more kernel CPU per inode (the allocator skips recently freed inodes
  // one by one), which would land on whichever tool runs first on the disk.
  const trees = existsSync('/dev/shm') ? await mkdtemp('/dev/shm/pt-bench-trees-') : join(scratch, 'trees');
  cleanups.push(() => rm(trees, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());

  const buckets = new Map<string, NonNullable<Awaited<ReturnType<typeof s3TestBucket>>>>();
  const server = async (name: string): Promise<Server> => {
    const bucket = (await s3TestBucket(`bench-${name}`))!;
    buckets.set(name, bucket);
    const s = await startServer({
      DATA_DIR: join(scratch, name),
      UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
      ...s3ServerEnv(bucket.bucket),
      BLOB_DELIVERY: 'redirect',
    });
    cleanups.push(() => s.stop());
    return s;
  };
  // Store the blobs first, so that the extract job's own time is what its log line measures.
  const ingested = async (s: Server, image: BuiltImage, name: string) => {
    await (await fetch(`${s.url}/v2/${name}/manifests/1`)).arrayBuffer();
    for (const layer of image.layers) await jobRate(s, 'ingest', 'digest', layer.digest, 600_000);
  };

  console.error('extraction (stored blob in S3 → decompress → layer.tar + toc.json in S3), one server each');
  for (const [compression, sizeMiB] of [['gzip', 256], ['zstd', 256], ['gzip', 1024]] as const) {
    const name = `extract-${compression}-${sizeMiB}`;
    const source = await layerOf(trees, name, sizeMiB, sizeMiB * MB);
    const image = await pushImage(registry, `library/${name}`, '1', [source], { compression });
    const s = await server(name);
    await ingested(s, image, `library/${name}`);
    // The native command-line decoder on the same blob, from a local file, hashed as
    // extraction hashes its tar: once before the extraction and twice after, the median
    // taken, as this VM's speed moves by half from one minute to the next.
    const blobFile = join(scratch, `${name}.blob`);
    const blob = await fetch(`${registry.url}/v2/library/${name}/blobs/${image.layers[0]!.digest}`);
    await pipeline(Readable.fromWeb(blob.body! as never), createWriteStream(blobFile));
    const cliRun = () => seconds(async () => execFileSync('sh', ['-c', `${compression} -dc < ${blobFile} | sha256sum`]));
    const cliRuns = [await cliRun()];
    const before = await hwmOf(s);
    const layer = (await readyPlan(s.url, `library/${name}:1`, { deadlineMs: 1_200_000 })).layers[0]!;
    const rate = await jobRate(s, 'extract', 'diff_id', layer.diff_id);
    const what = `extract a ${(layer.uncompressed_size / MB).toFixed(0)} MB ${compression} layer (${(image.layers[0]!.size / MB).toFixed(0)} MB compressed, ${sizeMiB} files)`;
    report(what, `${rate.toFixed(1)} MB/s uncompressed output, server peak RSS ${(await hwmOf(s)).toFixed(0)} MB (${before.toFixed(0)} MB before)`);
    await s.stop();
    cliRuns.push(await cliRun(), await cliRun());
    const cliRate = layer.uncompressed_size / MB / median(cliRuns);
    const cliRates = cliRuns.map((r) => (layer.uncompressed_size / MB / r).toFixed(0)).join(', ');
    report(`${compression} -dc | sha256sum of the same blob (median of 3)`, `${cliRate.toFixed(1)} MB/s uncompressed output (runs: ${cliRates}); extraction at ${((rate / cliRate) * 100).toFixed(0)}%`, `target ≥ 50%: ${rate / cliRate >= 0.5 ? 'met' : 'MISSED'}`);
    // The decoder alone: coreutils' sha256sum (no SHA extensions) is often the slower of the two.
    const decoderOnly = await seconds(async () => execFileSync('sh', ['-c', `${compression} -dc < ${blobFile} > /dev/null`]));
    report(`${compression} -dc > /dev/null, the decoder alone`, `${(layer.uncompressed_size / MB / decoderOnly).toFixed(1)} MB/s`);
    await rm(blobFile);
    // What the bucket takes: the same uncompressed tar from memory through plain lib-storage,
    // with the server's default parts (5 MiB, 2 at once), on the RGW that shares these cores.
    const bucket = buckets.get(name)!;
    const plain = await seconds(() => new Upload({ client: bucket.client, params: { Bucket: bucket.bucket, Key: 'bench/plain.tar', Body: source.tar }, partSize: 5 * MB, queueSize: 2 }).done());
    const plainRate = source.tar.length / MB / plain;
    report(`plain lib-storage upload of the same tar from memory`, `${plainRate.toFixed(1)} MB/s; extraction at ${((rate / plainRate) * 100).toFixed(0)}% of what the bucket takes`);
    // The same bucket-to-bucket work with native tools: the stored blob read from the
    // bucket, decoded by the command-line decoder, the tar uploaded by plain lib-storage
    // (no hash, no tar reading): what these cores allow beside the RGW.
    const nativeSeconds = await seconds(() => nativeCopy(bucket, image.layers[0]!.digest, compression));
    const nativeRate = layer.uncompressed_size / MB / nativeSeconds;
    report(`bucket → ${compression} -dc → lib-storage upload of the same blob`, `${nativeRate.toFixed(1)} MB/s uncompressed output; extraction at ${((rate / nativeRate) * 100).toFixed(0)}% of it`);
  }

  console.error('building a 4-layer root filesystem image');
  const rootfsLayers = [
    await layerOf(trees, 'base', 1500, 30 * MB),
    await layerOf(trees, 'libs', 800, 60 * MB),
    await layerOf(trees, 'app', 300, 100 * MB),
    await layerOf(trees, 'config', 40, 1 * MB),
  ];
  const app = await pushImage(registry, 'library/app', '1', rootfsLayers);
  const rootfsServer = await server('rootfs');
  console.error('time to a ready root filesystem (4 layers, 2,640 files)');
  await ingested(rootfsServer, app, 'library/app');
  const plan = await readyPlan(rootfsServer.url, 'library/app:1', { deadlineMs: 1_200_000 });
  const size = plan.layers.reduce((a, l) => a + l.uncompressed_size, 0);
  // Both tools write the same tree, on disk and on tmpfs. Every run's tree is kept until
  // all runs are done, for the same reason the source trees live on tmpfs: deleting one
  // run's tree would slow the next run's file creation down.
  const targets: Array<[string, string]> = [['disk, /tmp', scratch]];
  if (existsSync('/dev/shm')) targets.push(['tmpfs, /dev/shm', await mkdtemp('/dev/shm/pt-bench-')]);
  for (const [where, base] of targets) {
    if (base !== scratch) cleanups.push(() => rm(base, { recursive: true, force: true }));
    const ours: number[] = [];
    const theirs: number[] = [];
    // Each run starts with no dirty pages left by the one before.
    const settle = () => execFileSync('sync');
    for (let i = 0; i < RUNS; i++) {
      settle();
      ours.push(
        await seconds(async () => {
          const result = await pullthroughRootfs(['library/app:1', join(base, `ours-${i}`), '--server', rootfsServer.url]);
          if (result.code !== 0) throw new Error(result.stderr);
        }),
      );
      settle();
      theirs.push(await seconds(() => umociRootfs(registry, 'library/app:1', join(base, `umoci-${i}`))));
    }
    for (let i = 0; i < RUNS; i++) for (const tree of [`ours-${i}`, `umoci-${i}`]) await rm(join(base, tree), { recursive: true, force: true });
    const runs = (times: number[]) => `(runs: ${times.map((t) => t.toFixed(2)).join(', ')})`;
    report(`skopeo copy + umoci unpack from the upstream (${(size / MB).toFixed(0)} MB, ${where}, median of ${RUNS})`, `${median(theirs).toFixed(2)} s ${runs(theirs)}`);
    const speedup = median(theirs) / median(ours);
    report(`pullthrough rootfs from a warm cache (${where}, median of ${RUNS})`, `${median(ours).toFixed(2)} s = ${speedup.toFixed(1)}× faster ${runs(ours)}`, `target ≥ 2×: ${speedup >= 2 ? 'met' : 'MISSED'}`);
  }
}

await runBench(main);
