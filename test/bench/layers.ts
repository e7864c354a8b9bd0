// `npm run bench` (second part): pre-extracted layers on real components (Debian's
// docker-registry upstream, Ceph RGW, the real server process): extraction throughput for
// gzip and zstd layers, and the time to a ready root filesystem with `pullthrough rootfs`
// from a warm cache against `skopeo copy` + `umoci unpack` straight from the upstream.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry } from '../setup/registry.ts';
import { pushImage, type BuiltImage, type LayerSpec } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';
import { s3TestBucket, s3ServerEnv } from '../setup/s3.ts';
import { pullthroughRootfs, umociRootfs } from '../setup/rootfs.ts';
import { MB, cleanups, hwmOf, jobRate, median, report, runBench, seconds } from './harness.ts';

const RUNS = 3;

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

/** A layer tar (GNU tar, PAX) of `files` files totalling about `bytes`, in nested directories. */
async function layerOf(scratch: string, name: string, files: number, bytes: number): Promise<LayerSpec> {
  const root = join(scratch, 'trees', name);
  // Sizes skewed like a real root filesystem: most files small, a few large.
  const weights = Array.from({ length: files }, (_, i) => 1 / (1 + (i % 97)) ** 1.5);
  const total = weights.reduce((a, b) => a + b, 0);
  for (let i = 0; i < files; i++) {
    const dir = join(root, `d${i % 23}`, `s${i % 7}`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, `f${i}`), content(Math.max(1, Math.round((weights[i]! / total) * bytes))));
  }
  const tar = execFileSync('tar', ['--format=pax', '--sort=name', '-C', root, '-cf', '-', '.'], { maxBuffer: 2 * 1024 * MB });
  await rm(root, { recursive: true, force: true });
  return { tar };
}

async function main(): Promise<void> {
  if (!process.env.S3_TEST_ENDPOINT) throw new Error('run through `npm run bench`, which starts Ceph RGW');
  const scratch = await mkdtemp(join(tmpdir(), 'pt-bench-layers-'));
  cleanups.push(() => rm(scratch, { recursive: true, force: true }));
  const registry = await startRegistry();
  cleanups.push(() => registry.stop());

  console.error('building images: a 256 MB layer (gzip and zstd), and a 4-layer root filesystem');
  const extractLayer = await layerOf(scratch, 'extract', 256, 256 * MB);
  const gzip = await pushImage(registry, 'library/extract-gzip', '1', [extractLayer]);
  const zstd = await pushImage(registry, 'library/extract-zstd', '1', [extractLayer], { compression: 'zstd' });
  const rootfsLayers = [
    await layerOf(scratch, 'base', 1500, 30 * MB),
    await layerOf(scratch, 'libs', 800, 60 * MB),
    await layerOf(scratch, 'app', 300, 100 * MB),
    await layerOf(scratch, 'config', 40, 1 * MB),
  ];
  const app = await pushImage(registry, 'library/app', '1', rootfsLayers);

  const server: Server = await startServer({
    DATA_DIR: join(scratch, 'server'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    ...s3ServerEnv((await s3TestBucket('bench-layers'))!.bucket),
    BLOB_DELIVERY: 'redirect',
  });
  cleanups.push(() => server.stop());
  const readyPlan = async (image: string) => {
    let plan: { layers: Array<{ diff_id: string; uncompressed_size: number }> } | undefined;
    await until(async () => {
      const res = await fetch(`${server.url}/api/rootfs/${image}`);
      plan = (await res.json()) as typeof plan;
      return res.status === 200;
    }, 1_200_000, `extraction of ${image}`);
    return plan!;
  };
  const ingested = async (image: BuiltImage, name: string) => {
    // Store the blobs first, so the extract job's own time is what the log line measures.
    await (await fetch(`${server.url}/v2/${name}/manifests/1`)).arrayBuffer();
    for (const layer of image.layers) await jobRate(server, 'ingest', 'digest', layer.digest, 600_000);
  };

  console.error('extraction throughput (stored blob → decompress → layer.tar + toc.json in S3)');
  for (const [label, image, name] of [['gzip', gzip, 'library/extract-gzip'], ['zstd', zstd, 'library/extract-zstd']] as const) {
    await ingested(image, name);
    const plan = await readyPlan(`${name}:1`);
    const layer = plan.layers[0]!;
    const rate = await jobRate(server, 'extract', 'diff_id', layer.diff_id);
    report(`extract a ${(layer.uncompressed_size / MB).toFixed(0)} MB ${label} layer (${(image.layers[0]!.size / MB).toFixed(0)} MB compressed)`, `${rate.toFixed(1)} MB/s uncompressed output`);
  }
  report('server peak RSS after both extractions', `${(await hwmOf(server)).toFixed(0)} MB`);

  console.error('time to a ready root filesystem (4 layers, 2,640 files)');
  await ingested(app, 'library/app');
  const plan = await readyPlan('library/app:1');
  const size = plan.layers.reduce((a, l) => a + l.uncompressed_size, 0);
  const ours: number[] = [];
  const theirs: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    ours.push(
      await seconds(async () => {
        const result = await pullthroughRootfs(['library/app:1', join(scratch, `ours-${i}`), '--server', server.url]);
        if (result.code !== 0) throw new Error(result.stderr);
      }),
    );
    theirs.push(await seconds(() => umociRootfs(registry, 'library/app:1', join(scratch, `umoci-${i}`))));
    await rm(join(scratch, `ours-${i}`), { recursive: true, force: true });
    await rm(join(scratch, `umoci-${i}`), { recursive: true, force: true });
  }
  report(`skopeo copy + umoci unpack from the upstream (${(size / MB).toFixed(0)} MB, median of ${RUNS})`, `${median(theirs).toFixed(2)} s`);
  const speedup = median(theirs) / median(ours);
  report(`pullthrough rootfs from a warm cache (median of ${RUNS})`, `${median(ours).toFixed(2)} s = ${speedup.toFixed(1)}× faster`, `target ≥ 2×: ${speedup >= 2 ? 'met' : 'MISSED'}`);
}

await runBench(main);
