// Warm answers given again without running the app. A runtime that can (Node:
// workers/node.ts) looks a request up here before handing it to Hono; the manifest and
// blob routes keep what they answered from facts this process holds in memory.
import type { Context } from 'hono';
import { routePath } from 'hono/route';
import type { Metrics } from '../core/ports/metrics.ts';
import type { PullCounter } from '../core/registry/pulls.ts';
import type { BoundedCache, CachedCatalog, Kept } from '../core/registry/memory-cache.ts';
import { parseReference, type RepositoryTarget } from '../core/oci/reference.ts';
import type { AppEnv } from './env.ts';
import type { ResponseHeaders } from './stored.ts';
import { logRequest, loggedPath } from './request-log.ts';

/** The request as far as a kept answer depends on it; the runtime reads it off its own request. */
export interface ReplayRequest {
  method: string | undefined;
  /** The path and query as sent. */
  url: string | undefined;
  accept: string | undefined;
  authorization: string | undefined;
  /** Asked with a Range (answered by the app, which may refuse it). */
  ranged: boolean;
}

/**
 * The key of a request whose answer may be given again: a GET or HEAD without Range,
 * by everything else the answer depends on (the path and query, Accept, the credentials
 * as sent). Undefined for any other request.
 */
export function replayKey(request: ReplayRequest): string | undefined {
  if ((request.method !== 'GET' && request.method !== 'HEAD') || request.ranged || request.url === undefined) return undefined;
  // An Authorization header sent empty is not none: the app refuses it.
  const credentials = request.authorization === undefined ? '' : `=${request.authorization}`;
  return `q:${request.method} ${request.url}\n${request.accept ?? ''}\n${credentials}`;
}

/** An answer kept for its key: a 200 with these headers and bytes, and what serving it counts. */
export interface Replay {
  headers: ResponseHeaders;
  /** Absent for HEAD. */
  body: Uint8Array | undefined;
  method: 'GET' | 'HEAD';
  /** The access log's path, and the route the request counter names. */
  path: string;
  route: string;
  /** A manifest GET: the pull it counts, and a cache hit. */
  pull?: { kind: 'manifest'; digest: string } | undefined;
  /** Until when (by the clock) the credentials it was answered for hold. */
  until: number;
  /** The facts it was made from: it holds while every one does. */
  facts: readonly Kept[];
}

export interface ReplayDeps {
  /** The catalog's map: answers share its bounds (MEMORY_CACHE_ENTRIES, MEMORY_CACHE_BYTES) and its least-recently-used order. */
  catalog: CachedCatalog;
  clock: () => number;
  pulls: PullCounter;
  metrics: Metrics;
  log: (entry: Record<string, unknown>) => void;
  /** The request of a Hono context, as the runtime's own request (which it looks answers up by). */
  requestOf: (c: Context<AppEnv>) => ReplayRequest | undefined;
}

/** The URLs whose answers are kept: no query, or only the upstream's name (containerd's `?ns=`). */
const KEPT_QUERY = /^[^?]*(\?ns=[^&]*)?$/;

/** What an answer costs besides its bytes and key: the headers and the facts. */
const REPLAY_OVERHEAD_BYTES = 512;

/**
 * Answers given again, for as long as what they were made from holds in this process:
 * a manifest whose tag resolution (within TAG_TTL_SECONDS), "nothing left to fetch"
 * (MEMORY_CACHE_TTL_SECONDS, and no blob row of this process changed since) are kept; a
 * blob HEAD whose ready row is kept (MEMORY_CACHE_TTL_SECONDS). An answer is never staler
 * than the memory cache it came from, and never outlives the token it was answered for.
 * Serving one does what the app does for a warm request: the access log line (marked
 * `replayed`), the request and cache counters, the pull count.
 */
export class Replays {
  readonly #deps: ReplayDeps;
  readonly #cache: BoundedCache<unknown>;

  constructor(deps: ReplayDeps) {
    this.#deps = deps;
    this.#cache = deps.catalog.cache as BoundedCache<unknown>;
  }

  /** The answer kept for `key` while it holds. */
  find(key: string): Replay | undefined {
    const replay = this.#cache.get(key) as Replay | undefined;
    if (!replay) return undefined;
    const now = this.#deps.clock();
    if (replay.until > now && replay.facts.every((f) => !f.gone && f.until > now)) return replay;
    this.#cache.delete(key);
    return undefined;
  }

  /** What the app does after a warm answer, for one given again. */
  served(replay: Replay, ms: number): void {
    const { log, metrics, pulls } = this.#deps;
    logRequest(log, metrics, { method: replay.method, path: replay.path, route: replay.route, status: 200, ms, replayed: true });
    if (!replay.pull) return;
    metrics.count('pullthrough_cache_requests_total', { kind: replay.pull.kind, result: 'hit' });
    pulls.count(replay.pull.kind, replay.pull.digest)?.catch((e: unknown) => log({ level: 'error', msg: 'background work failed', error: String(e) }));
  }

  /**
   * Keeps a manifest answered from the store: by digest, or by a tag whose kept resolution
   * names it (not an index's child served for an old client's Accept).
   */
  keepManifest(c: Context<AppEnv>, target: RepositoryTarget, reference: string, answer: { digest: string; fromStore: boolean }, headers: ResponseHeaders, body: Uint8Array | undefined): void {
    if (!answer.fromStore) return;
    const { catalog } = this.#deps;
    const ref = parseReference(reference);
    // By tag: the kept resolution to this digest is a fact of the answer; by digest, the digest must be the one answered.
    const resolution = 'tag' in ref ? catalog.keptTag(target, ref.tag, answer.digest) : undefined;
    if ('tag' in ref ? !resolution : ref.digest.value !== answer.digest) return;
    const nothingToFetch = catalog.keptNothingToFetch(answer.digest);
    if (!nothingToFetch) return;
    const method = c.get('method');
    this.#keep(c, { headers, body, method, pull: method === 'GET' ? { kind: 'manifest', digest: answer.digest } : undefined }, resolution ? [resolution, ...nothingToFetch] : nothingToFetch);
  }

  /** Keeps a HEAD of a stored blob (the route asks only for HEAD), while its ready row is kept. */
  keepBlobHead(c: Context<AppEnv>, digest: string, headers: ResponseHeaders): void {
    const row = this.#deps.catalog.keptBlob(digest);
    if (row) this.#keep(c, { headers, body: undefined, method: 'HEAD' }, [row]);
  }

  #keep(c: Context<AppEnv>, answer: Pick<Replay, 'headers' | 'body' | 'method' | 'pull'>, facts: readonly Kept[]): void {
    const request = this.#deps.requestOf(c);
    const key = request && replayKey(request);
    // Queries clients send (none, or containerd's `ns`) only: made-up ones would each push a useful entry out.
    if (!key || !KEPT_QUERY.test(request.url!)) return;
    const until = c.get('caller').until ?? Infinity;
    const replay: Replay = { ...answer, headers: { ...answer.headers }, path: loggedPath(c), route: routePath(c), until, facts };
    const soonest = Math.min(until, ...facts.map((f) => f.until));
    this.#cache.set(key, replay, soonest, (answer.body?.byteLength ?? 0) + REPLAY_OVERHEAD_BYTES);
  }
}
