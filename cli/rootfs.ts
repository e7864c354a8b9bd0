// `pullthrough rootfs`: a root filesystem from a pullthrough server's layer plan. Each
// layer's TOC is fetched and checked against its digest; the apply step
// (workers/rootfs-apply.ts, which says how hostile layers are contained) walks the TOCs in
// layer order and hands regular files, in batches that lie together in the layer tar, to
// writer threads (workers/rootfs-write.ts) that fetch each batch with one Range request
// (straight from the bucket when the server hands out presigned URLs) and write it,
// checking every file against its TOC digest. Nothing is written but the root filesystem
// itself; memory is bounded by the writer threads' socket buffers, not by layer sizes.
import { createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { parseToc, type Toc } from '../core/layer/toc.ts';
import { Applier, type BatchLimits, type Rejected } from './rootfs-apply.ts';
import { bodyOf, get, WriterPool } from './rootfs-write.ts';
import type { WirePlan as RootfsPlan, WireLayer as PlannedLayer } from '../functions/wire.ts';

export type { Rejected };

/**
 * Writer threads by default: one per core, 2 to 8. Each hashes and writes what it
 * downloads, so more threads than cores only add contention (on 2 cores, 4 writers took
 * 10-20% longer than 2).
 */
export const DEFAULT_CONCURRENCY = Math.min(8, Math.max(2, availableParallelism()));

export interface RootfsReport {
  manifest: string;
  layers: number;
  /** Bytes in the layers' tars (only file contents are fetched). */
  bytes: number;
  entries: number;
  /** Entries refused as unsafe or impossible (reported, never silently dropped). */
  rejected: Rejected[];
  /** Entries not created or not complete, with why (device nodes when not root, extended attributes). */
  skipped: Rejected[];
}

export interface RootfsOptions {
  server: string;
  image: string;
  dir: string;
  platform?: string | undefined;
  /** Writer threads, each with one download at a time (default: DEFAULT_CONCURRENCY). */
  concurrency?: number;
  /** How files are grouped into Range requests (tests make them small). */
  batch?: BatchLimits;
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

/** A whole 200 response body, or an error naming `what`. */
async function getOk(url: string, what: string): Promise<Buffer> {
  const res = await get(url);
  const body = await bodyOf(res);
  if (res.statusCode !== 200) throw new RootfsError(`${what}: ${res.statusCode} ${body.toString('utf8', 0, 500)}`);
  return body;
}

/**
 * Credentials for a mirror with access control, from the environment (never the command
 * line, which process lists show): PULLTHROUGH_TOKEN (a CI token, or a token from
 * `/token`), else PULLTHROUGH_USER and PULLTHROUGH_PASSWORD. Only the plan request
 * carries them; the layer URLs in the plan carry their own short-lived token.
 */
export function credentialHeaders(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  if (env.PULLTHROUGH_TOKEN) return { authorization: `Bearer ${env.PULLTHROUGH_TOKEN}` };
  if (env.PULLTHROUGH_USER) return { authorization: `Basic ${Buffer.from(`${env.PULLTHROUGH_USER}:${env.PULLTHROUGH_PASSWORD ?? ''}`).toString('base64')}` };
  return {};
}

/**
 * The plan, once every layer is extracted (polling while the server answers 202), and how
 * long its presigned URLs live, by the server's clock (its Date header), so a client
 * whose clock is off still refreshes them in time.
 */
async function readyPlan(options: RootfsOptions): Promise<{ plan: RootfsPlan; urlsLifetimeMs?: number }> {
  const url = new URL(`/api/rootfs/${options.image}`, options.server);
  if (options.platform) url.searchParams.set('platform', options.platform);
  const deadline = Date.now() + (options.waitMs ?? 30 * 60 * 1000);
  for (;;) {
    const res = await get(url.href, credentialHeaders());
    const text = (await bodyOf(res)).toString();
    let body: (RootfsPlan & { errors?: unknown }) | undefined;
    try {
      body = JSON.parse(text) as RootfsPlan & { errors?: unknown };
    } catch {}
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299 || !body) throw new RootfsError(`the server refused the plan (${status}): ${body ? JSON.stringify(body.errors ?? body) : text.slice(0, 500)}`);
    const failed = body.layers.filter((l) => l.state === 'failed' || l.state === 'absent');
    if (failed.length > 0) {
      throw new RootfsError(`layers cannot be extracted: ${failed.map((l) => `${l.diff_id} ${l.state}${l.error ? `: ${l.error}` : ''}`).join('; ')}`);
    }
    if (status === 200 && body.ready) {
      // The Date header counts whole seconds: the server's clock may be up to a second past it.
      const lifetime = Date.parse(body.urls_expire_at ?? '') - Date.parse(res.headers.date ?? '') - 1000;
      return { plan: body, ...(Number.isFinite(lifetime) ? { urlsLifetimeMs: lifetime } : {}) };
    }
    if (Date.now() > deadline) throw new RootfsError('timed out waiting for the server to extract the layers');
    const wait = Math.min(10, Math.max(1, Number(res.headers['retry-after']) || 1));
    await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

/** A layer's TOC, checked against the digest the plan gives and against its diff_id. */
async function fetchToc(layer: PlannedLayer): Promise<Toc> {
  const bytes = await getOk(layer.toc_url!, `TOC of ${layer.diff_id}`);
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  if (layer.toc_digest && digest !== layer.toc_digest) throw new RootfsError(`TOC of ${layer.diff_id} does not match its digest`);
  const toc = parseToc(bytes.toString());
  if (toc.diff_id !== layer.diff_id) throw new RootfsError(`TOC of ${layer.diff_id} is for ${toc.diff_id}`);
  return toc;
}

/**
 * Presigned URLs expire (the server's PRESIGN_TTL_SECONDS). While a build runs, the plan
 * is asked for again halfway through each lifetime, pinned to the manifest being built,
 * and `update` gets the fresh layer tar URLs. A refresh that fails is tried again a
 * second later; if the URLs run out meanwhile, the bucket's 403 fails the build.
 */
function keepUrlsFresh(options: RootfsOptions, plan: RootfsPlan, lifetimeMs: number, update: (urls: string[]) => void): { stop(): void } {
  const pinned: RootfsOptions = { ...options, image: `${plan.upstream}/${plan.name}@${plan.manifest}`, platform: undefined };
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const schedule = (ms: number) => {
    if (stopped) return;
    timer = setTimeout(refresh, Math.max(250, ms));
    timer.unref();
  };
  const refresh = async () => {
    try {
      const fresh = await readyPlan(pinned);
      const same = fresh.plan.manifest === plan.manifest && fresh.plan.layers.length === plan.layers.length && fresh.plan.layers.every((l, i) => l.diff_id === plan.layers[i]!.diff_id);
      if (!same || fresh.urlsLifetimeMs === undefined) throw new RootfsError('the refreshed plan is not the one being built');
      if (!stopped) update(fresh.plan.layers.map((l) => l.tar_url!));
      schedule(fresh.urlsLifetimeMs / 2);
    } catch {
      schedule(1000);
    }
  };
  schedule(lifetimeMs / 2);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** Builds `options.dir` (created if missing; it should be empty) from the image's layers. */
export async function buildRootfs(options: RootfsOptions): Promise<RootfsReport> {
  const { plan, urlsLifetimeMs } = await readyPlan(options);
  const root = resolve(options.dir);
  await mkdir(root, { recursive: true });
  const progress = options.progress;
  progress?.plan(plan.layers);
  const count = plan.layers.length;
  const tocs = plan.layers.map((layer) => fetchToc(layer));
  for (const toc of tocs) toc.catch(() => {});
  const writers = new WriterPool(Math.max(1, options.concurrency ?? DEFAULT_CONCURRENCY), count);
  const applier = new Applier(root, writers, options.batch);
  const report = () => plan.layers.forEach((_, i) => progress?.downloaded(i, Number(Atomics.load(writers.downloaded, i))));
  const timer = progress ? setInterval(report, 100) : undefined;
  const fresh = urlsLifetimeMs !== undefined ? keepUrlsFresh(options, plan, urlsLifetimeMs, (urls) => writers.setUrls(urls)) : undefined;
  try {
    let bytes = 0;
    for (let i = 0; i < count; i++) {
      const toc = await tocs[i]!;
      bytes += toc.size;
      await applier.apply(i, toc, plan.layers[i]!.tar_url!);
      applier.written(i).then(() => (report(), progress?.applied(i)), () => {});
    }
    await applier.finish();
    progress?.done();
    return { manifest: plan.manifest, layers: count, bytes, entries: applier.entries, rejected: applier.rejected, skipped: applier.skipped };
  } finally {
    clearInterval(timer);
    fresh?.stop();
    await writers.stop();
  }
}
