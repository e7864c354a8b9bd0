// `pullthrough rootfs`: a root filesystem from a pullthrough server's layer plan. Layers
// are downloaded in parallel (uncompressed tars and their TOCs, straight from the bucket
// when the server hands out presigned URLs), each checked against its diff_id, and
// applied in order on a second thread (workers/rootfs-apply.ts, which says how hostile
// layers are contained) while later layers still download.
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { parseToc, type Toc } from '../core/toc.ts';
import type { ApplyReply, ApplyRequest, Rejected } from './rootfs-apply.ts';
import type { RootfsPlan, PlannedLayer } from '../core/plan.ts';

export type { Rejected };

export interface RootfsReport {
  manifest: string;
  layers: number;
  /** Bytes of layer tars downloaded. */
  bytes: number;
  entries: number;
  /** Entries refused as unsafe or impossible (reported, never silently dropped). */
  rejected: Rejected[];
  /** Entries not created, with why (device nodes when not root). */
  skipped: Rejected[];
}

export interface RootfsOptions {
  server: string;
  image: string;
  dir: string;
  platform?: string | undefined;
  /** Layers downloaded at once. */
  concurrency?: number;
  /** How long to wait for the server to extract layers. */
  waitMs?: number;
  progress?: Progress;
}

/** Progress of the downloads and of the apply step, for a display. */
export interface Progress {
  plan(layers: readonly PlannedLayer[]): void;
  downloaded(layer: number, bytes: number): void;
  applied(layer: number): void;
  done(): void;
}

class RootfsError extends Error {}

async function fetchOk(url: string, what: string, signal: AbortSignal): Promise<Response> {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    throw new RootfsError(`${what}: ${res.status} ${text.slice(0, 500)}`);
  }
  return res;
}

/** The plan, once every layer is extracted (polling while the server answers 202). */
async function readyPlan(options: RootfsOptions): Promise<RootfsPlan> {
  const url = new URL(`/api/rootfs/${options.image}`, options.server);
  if (options.platform) url.searchParams.set('platform', options.platform);
  const deadline = Date.now() + (options.waitMs ?? 30 * 60 * 1000);
  for (;;) {
    const res = await fetch(url);
    const body = (await res.json().catch(() => undefined)) as (RootfsPlan & { errors?: unknown }) | undefined;
    if (!res.ok || !body) throw new RootfsError(`the server refused the plan (${res.status}): ${JSON.stringify(body?.errors ?? body)}`);
    const failed = body.layers.filter((l) => l.state === 'failed' || l.state === 'absent');
    if (failed.length > 0) {
      throw new RootfsError(`layers cannot be extracted: ${failed.map((l) => `${l.diff_id} ${l.state}${l.error ? `: ${l.error}` : ''}`).join('; ')}`);
    }
    if (res.status === 200 && body.ready) return body;
    if (Date.now() > deadline) throw new RootfsError('timed out waiting for the server to extract the layers');
    const wait = Math.min(10, Math.max(1, Number(res.headers.get('retry-after')) || 1));
    await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

/**
 * Downloads layer.tar to `file`, checking it against the diff_id, and its TOC against its
 * digest. `started` gets the TOC once the file exists; `onBytes` how much of it is written.
 */
async function download(layer: PlannedLayer, file: string, started: (toc: Toc) => void, onBytes: (n: number) => void, signal: AbortSignal): Promise<void> {
  const tocBytes = new Uint8Array(await (await fetchOk(layer.toc_url!, `TOC of ${layer.diff_id}`, signal)).arrayBuffer());
  const tocDigest = `sha256:${createHash('sha256').update(tocBytes).digest('hex')}`;
  if (layer.toc_digest && tocDigest !== layer.toc_digest) throw new RootfsError(`TOC of ${layer.diff_id} does not match its digest`);
  const toc = parseToc(new TextDecoder().decode(tocBytes));
  if (toc.diff_id !== layer.diff_id) throw new RootfsError(`TOC of ${layer.diff_id} is for ${toc.diff_id}`);
  const res = await fetchOk(layer.tar_url!, `layer ${layer.diff_id}`, signal);
  const out = await open(file, 'w');
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    started(toc);
    for await (const chunk of res.body! as AsyncIterable<Uint8Array>) {
      hash.update(chunk);
      for (let done = 0; done < chunk.length; ) done += (await out.write(chunk, done)).bytesWritten;
      bytes += chunk.length;
      onBytes(bytes);
    }
  } finally {
    await out.close();
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== layer.diff_id) throw new RootfsError(`layer ${layer.diff_id} downloaded as ${actual}`);
  if (bytes !== toc.size) throw new RootfsError(`layer ${layer.diff_id} is ${bytes} bytes, its TOC says ${toc.size}`);
}

/** The apply thread (workers/rootfs-apply.ts), one request at a time. */
function applyThread(root: string, written: BigInt64Array): { call(request: ApplyRequest): Promise<ApplyReply>; stop(): Promise<void> } {
  const worker = new Worker(new URL('./rootfs-apply.ts', import.meta.url), { workerData: { role: 'pullthrough-apply', root, written } });
  let pending: { resolve(reply: ApplyReply): void; reject(e: Error): void } | undefined;
  worker.on('message', (reply: ApplyReply) => {
    const p = pending;
    pending = undefined;
    if ('error' in reply) p?.reject(new RootfsError(reply.error));
    else p?.resolve(reply);
  });
  worker.on('error', (e) => pending?.reject(e));
  worker.on('exit', () => pending?.reject(new RootfsError('the apply thread stopped')));
  return {
    call(request) {
      return new Promise((resolve, reject) => {
        pending = { resolve, reject };
        worker.postMessage(request);
      });
    },
    async stop() {
      await worker.terminate();
    },
  };
}

/** Builds `options.dir` (created if missing; it should be empty) from the image's layers. */
export async function buildRootfs(options: RootfsOptions): Promise<RootfsReport> {
  const plan = await readyPlan(options);
  const root = resolve(options.dir);
  await mkdir(root, { recursive: true });
  const scratch = await mkdtemp(join(tmpdir(), 'pt-rootfs-'));
  const progress = options.progress;
  progress?.plan(plan.layers);
  const stop = new AbortController();
  const limit = Math.max(1, options.concurrency ?? 4);
  // Downloads run `limit` at a time in layer order, each into a temp file; layer i is
  // applied (on the apply thread) once layer i-1 is, reading its file as it is written.
  const count = plan.layers.length;
  const written = new BigInt64Array(new SharedArrayBuffer(8 * count));
  const started = plan.layers.map(() => Promise.withResolvers<Toc>());
  const finished = plan.layers.map(() => Promise.withResolvers<void>());
  for (const d of [...started, ...finished]) d.promise.catch(() => {});
  const signalWritten = (i: number, value: bigint) => {
    Atomics.store(written, i, value);
    Atomics.notify(written, i);
  };
  let next = 0;
  const pool = Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count && !stop.signal.aborted) {
      const i = next++;
      const onBytes = (n: number) => (signalWritten(i, BigInt(n)), progress?.downloaded(i, n));
      await download(plan.layers[i]!, join(scratch, `${i}.tar`), started[i]!.resolve, onBytes, stop.signal).then(finished[i]!.resolve, (e: unknown) => {
        signalWritten(i, -1n);
        started[i]!.reject(e);
        finished[i]!.reject(e);
      });
    }
  });
  const applier = applyThread(root, written);
  try {
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const toc = await started[i]!.promise;
      bytes += toc.size;
      // A failed download makes the apply fail too: report the download's reason.
      await applier.call({ layer: i, tarFile: join(scratch, `${i}.tar`), toc }).catch(async (e: unknown) => {
        throw await finished[i]!.promise.then(() => e, (reason: unknown) => reason);
      });
      progress?.applied(i);
    }
    // Every download must also have matched its diff_id.
    await Promise.all(finished.map((d) => d.promise));
    const reply = await applier.call({ finish: true });
    if (!('finished' in reply)) throw new RootfsError('the apply thread did not finish');
    progress?.done();
    return { manifest: plan.manifest, layers: count, bytes, ...reply.finished };
  } finally {
    stop.abort();
    await applier.stop();
    await Promise.allSettled(pool);
    await rm(scratch, { recursive: true, force: true });
  }
}
