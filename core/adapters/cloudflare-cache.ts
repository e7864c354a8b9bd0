import type { SharedCache } from '../ports/shared-cache.ts';

/** The part of the Workers Cache API (`caches.default`) used here. */
export interface EdgeCache {
  match(request: Request): Promise<Response | undefined>;
  put(request: Request, response: Response): Promise<void>;
}

/**
 * The SharedCache of a Worker: the data center's Cache API, entries under a URL of their
 * own (never a client-visible one) with `max-age` as their lifetime. On a `*.workers.dev`
 * host Cloudflare keeps nothing there (every `match` misses): route the Worker on a domain
 * of its zone to have it. Values are small (tag resolutions, rows, manifests under their
 * 4 MiB cap), so they are read whole.
 */
export class CloudflareSharedCache implements SharedCache {
  readonly #cache: EdgeCache;
  readonly #namespace: string;

  /** `namespace` keeps deployments apart that share a zone (their catalogs differ): the database's host. */
  constructor(cache: EdgeCache, namespace: string) {
    this.#cache = cache;
    this.#namespace = encodeURIComponent(namespace);
  }

  #request(key: string): Request {
    return new Request(`https://pullthrough-cache.internal/${this.#namespace}/${encodeURIComponent(key)}`);
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    const res = await this.#cache.match(this.#request(key));
    return res ? new Uint8Array(await res.arrayBuffer()) : undefined;
  }

  async put(key: string, value: Uint8Array, ttlSeconds: number): Promise<void> {
    const maxAge = Math.max(1, Math.floor(ttlSeconds));
    await this.#cache.put(this.#request(key), new Response(value as Uint8Array<ArrayBuffer>, { headers: { 'cache-control': `max-age=${maxAge}` } }));
  }
}
