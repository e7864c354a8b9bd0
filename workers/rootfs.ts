// `pullthrough rootfs`: a root filesystem from a pullthrough server's layer plan. Layers
// are downloaded in parallel (uncompressed tars and their TOCs, straight from the bucket
// when the server hands out presigned URLs), each checked against its diff_id, and
// streamed to a second thread (workers/rootfs-apply.ts, which says how hostile layers are
// contained) that applies them in order as their bytes arrive. Nothing is written but the
// root filesystem itself; memory is bounded by AHEAD_BYTES × the downloads at once.
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { parseToc, type Toc } from '../core/toc.ts';
import type { ApplyReply, ApplyRequest, LayerMessage, Rejected } from './rootfs-apply.ts';
import type { RootfsPlan, PlannedLayer } from '../core/plan.ts';

export type { Rejected };

/** How far a layer's download may run ahead of its apply (memory: this × downloads at once). */
const AHEAD_BYTES = 32 * 1024 * 1024;

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
 * Downloads layer.tar, checking it against the diff_id, and its TOC against its digest.
 * `started` gets the TOC; every chunk goes to `send` (which may hold the download back).
 */
async function download(layer: PlannedLayer, started: (toc: Toc) => void, send: (chunk: Uint8Array, total: number) => Promise<void>, signal: AbortSignal): Promise<void> {
  const tocBytes = new Uint8Array(await (await fetchOk(layer.toc_url!, `TOC of ${layer.diff_id}`, signal)).arrayBuffer());
  const tocDigest = `sha256:${createHash('sha256').update(tocBytes).digest('hex')}`;
  if (layer.toc_digest && tocDigest !== layer.toc_digest) throw new RootfsError(`TOC of ${layer.diff_id} does not match its digest`);
  const toc = parseToc(new TextDecoder().decode(tocBytes));
  if (toc.diff_id !== layer.diff_id) throw new RootfsError(`TOC of ${layer.diff_id} is for ${toc.diff_id}`);
  const res = await fetchOk(layer.tar_url!, `layer ${layer.diff_id}`, signal);
  const hash = createHash('sha256');
  let bytes = 0;
  started(toc);
  for await (const chunk of res.body! as AsyncIterable<Uint8Array>) {
    hash.update(chunk);
    bytes += chunk.length;
    await send(chunk, bytes);
  }
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== layer.diff_id) throw new RootfsError(`layer ${layer.diff_id} downloaded as ${actual}`);
  if (bytes !== toc.size) throw new RootfsError(`layer ${layer.diff_id} is ${bytes} bytes, its TOC says ${toc.size}`);
}

/** The apply thread (workers/rootfs-apply.ts), one request at a time. */
function applyThread(root: string, layers: number): { call(request: ApplyRequest): Promise<ApplyReply>; send(message: LayerMessage, total?: number): Promise<void>; stop(): Promise<void> } {
  const { port1, port2 } = new MessageChannel();
  const posted = new Int32Array(new SharedArrayBuffer(4));
  const consumed = new BigInt64Array(new SharedArrayBuffer(8 * layers));
  const worker = new Worker(new URL('./rootfs-apply.ts', import.meta.url), { workerData: { role: 'pullthrough-apply', root, port: port2, posted, consumed }, transferList: [port2] });
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
    /** Sends layer bytes; resolves when the layer is less than a window ahead of the apply. */
    async send(message, total = 0) {
      port1.postMessage(message);
      Atomics.add(posted, 0, 1);
      Atomics.notify(posted, 0);
      for (;;) {
        const applied = Atomics.load(consumed, message.layer);
        if (total - Number(applied) <= AHEAD_BYTES) return;
        await Atomics.waitAsync(consumed, message.layer, applied, 1000).value;
      }
    },
    async stop() {
      port1.close();
      await worker.terminate();
    },
  };
}

/** Builds `options.dir` (created if missing; it should be empty) from the image's layers. */
export async function buildRootfs(options: RootfsOptions): Promise<RootfsReport> {
  const plan = await readyPlan(options);
  const root = resolve(options.dir);
  await mkdir(root, { recursive: true });
  const progress = options.progress;
  progress?.plan(plan.layers);
  const stop = new AbortController();
  const limit = Math.max(1, options.concurrency ?? 4);
  // Downloads run `limit` at a time in layer order, streaming to the apply thread, which
  // applies layer i once layer i-1 is; later layers run at most AHEAD_BYTES ahead of it.
  const count = plan.layers.length;
  const applier = applyThread(root, count);
  const started = plan.layers.map(() => Promise.withResolvers<Toc>());
  const finished = plan.layers.map(() => Promise.withResolvers<void>());
  for (const d of [...started, ...finished]) d.promise.catch(() => {});
  let next = 0;
  const pool = Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count && !stop.signal.aborted) {
      const i = next++;
      const send = async (chunk: Uint8Array, total: number) => {
        progress?.downloaded(i, total);
        await applier.send({ layer: i, chunk }, total);
      };
      await download(plan.layers[i]!, started[i]!.resolve, send, stop.signal).then(finished[i]!.resolve, (e: unknown) => {
        void applier.send({ layer: i, error: e instanceof Error ? e.message : String(e) });
        started[i]!.reject(e);
        finished[i]!.reject(e);
      });
    }
  });
  try {
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const toc = await started[i]!.promise;
      bytes += toc.size;
      // A failed download makes the apply fail too: report the download's reason.
      await applier.call({ layer: i, toc }).catch(async (e: unknown) => {
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
  }
}
