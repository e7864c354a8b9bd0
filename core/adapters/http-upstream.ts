import type { Metrics } from '../ports/metrics.ts';
import { OciError, redactUrls } from '../oci/errors.ts';
import { isTransientStatus, tooManyRequests, type Upstream, type UpstreamConfig } from '../ports/upstream.ts';

export type { UpstreamConfig };


export interface UpstreamOptions {
  fetch?: typeof fetch;
  /** Attempts for transient failures (network errors, `isTransientStatus`), including the first. */
  attempts?: number;
  backoffBaseMs?: number;
  now?: () => number;
  /** Counts every request to the registry (`pullthrough_upstream_requests_total`, by host and status). */
  metrics?: Metrics;
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

const MAX_REDIRECTS = 5;
const DEFAULT_TOKEN_SECONDS = 60;

/** Parses `Bearer realm="...",service="...",scope="..."` (and `Basic realm=...`). */
export function parseChallenge(header: string): { scheme: string; params: Record<string, string> } | undefined {
  const m = /^\s*(\w+)\s*(.*)$/.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) {
    params[p[1]!.toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
  }
  return { scheme: m[1]!.toLowerCase(), params };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A client for one configured upstream registry. It speaks the token flow from the
 * `WWW-Authenticate` challenge (anonymous, or Basic credentials to the realm), caches
 * tokens per scope until `expires_in`, follows redirects (to blob storage) without
 * forwarding `Authorization`, and retries transient failures with backoff.
 * Credentials never appear in errors it throws.
 */
export class UpstreamRegistry implements Upstream {
  readonly host: string;
  readonly #config: UpstreamConfig;
  readonly #fetch: typeof fetch;
  readonly #attempts: number;
  readonly #backoffBaseMs: number;
  readonly #now: () => number;
  readonly #tokens = new Map<string, CachedToken>();
  #basicOnly = false;
  readonly #metrics: Metrics | undefined;
  /** The registry's own origin: requests elsewhere (redirects to blob storage, the token realm) are not counted as upstream requests. */
  readonly #origin: string;

  constructor(host: string, config: UpstreamConfig, options: UpstreamOptions = {}) {
    this.host = host;
    this.#metrics = options.metrics;
    this.#origin = new URL(config.url).origin;
    this.#config = { ...config, url: config.url.replace(/\/+$/, '') };
    this.#fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.#attempts = options.attempts ?? 3;
    this.#backoffBaseMs = options.backoffBaseMs ?? 200;
    this.#now = options.now ?? Date.now;
  }

  get #basic(): string | undefined {
    const { username, password } = this.#config;
    return username !== undefined ? `Basic ${Buffer.from(`${username}:${password ?? ''}`).toString('base64')}` : undefined;
  }

  /**
   * Sends `method path` (path starts with `/v2/`) for repository `name`. Resolves with
   * the upstream's final response whatever its status (after auth and redirects); throws
   * UNAVAILABLE when the upstream cannot be reached, UNAUTHORIZED when it refuses our
   * credentials. Aborting `signal` stops the request and errors the response body with
   * the signal's reason.
   */
  async request(method: 'GET' | 'HEAD', path: string, name: string, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    const scope = `repository:${name}:pull`;
    let res = await this.#send(method, `${this.#config.url}${path}`, headers, this.#authorization(scope), signal);
    if (res.status === 401) {
      const challenge = parseChallenge(res.headers.get('www-authenticate') ?? '');
      await res.body?.cancel();
      if (challenge?.scheme === 'bearer' && challenge.params.realm) {
        await this.#fetchToken(challenge.params, scope);
      } else if (challenge?.scheme === 'basic' && this.#basic) {
        this.#basicOnly = true;
      } else {
        throw new OciError('UNAUTHORIZED', 'upstream requires authentication', { upstream: this.host });
      }
      res = await this.#send(method, `${this.#config.url}${path}`, headers, this.#authorization(scope), signal);
      if (res.status === 401) {
        await res.body?.cancel();
        throw new OciError('UNAUTHORIZED', 'upstream refused the configured credentials', { upstream: this.host });
      }
    }
    return res;
  }

  #authorization(scope: string): string | undefined {
    if (this.#basicOnly) return this.#basic;
    const cached = this.#tokens.get(scope);
    if (cached && cached.expiresAt > this.#now()) return `Bearer ${cached.token}`;
    return undefined;
  }

  async #fetchToken(params: Record<string, string>, scope: string): Promise<void> {
    let realm: URL;
    try {
      realm = new URL(params.realm!);
    } catch {
      throw new OciError('UNAVAILABLE', 'upstream sent an invalid token realm', { upstream: this.host });
    }
    if (params.service) realm.searchParams.set('service', params.service);
    realm.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (this.#basic) headers.authorization = this.#basic;
    const res = await this.#send('GET', realm.toString(), headers, undefined, undefined, false);
    if (!res.ok) {
      await res.body?.cancel();
      if (res.status === 429) throw tooManyRequests(this.host, res);
      const refused = res.status === 401 || res.status === 403;
      throw new OciError(refused ? 'UNAUTHORIZED' : 'UNAVAILABLE', 'upstream token service refused', { upstream: this.host, status: res.status }, { retryable: !refused && isTransientStatus(res.status) });
    }
    const body = (await res.json()) as { token?: string; access_token?: string; expires_in?: number };
    const token = body.token ?? body.access_token;
    if (!token) throw new OciError('UNAVAILABLE', 'upstream token service sent no token', { upstream: this.host });
    const seconds = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    // Renew a little early so a token never expires between our check and the upstream's.
    this.#tokens.set(scope, { token, expiresAt: this.#now() + Math.max(1, seconds - 10) * 1000 });
  }

  /** One logical request: retries transient failures, follows redirects by hand. */
  async #send(method: string, url: string, headers: Record<string, string>, authorization: string | undefined, signal?: AbortSignal, followRedirects = true): Promise<Response> {
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.#attempts; attempt++) {
      try {
        let target = url;
        let auth = authorization;
        for (let hop = 0; ; hop++) {
          const toRegistry = new URL(target).origin === this.#origin;
          const res = await this.#fetch(target, {
            method,
            headers: { ...headers, ...(auth ? { authorization: auth } : {}) },
            redirect: 'manual',
            signal,
          }).catch((e: unknown) => {
            if (toRegistry) this.#metrics?.count('pullthrough_upstream_requests_total', { host: this.host, status: 'error' });
            throw e;
          });
          if (toRegistry) this.#metrics?.count('pullthrough_upstream_requests_total', { host: this.host, status: String(res.status) });
          const location = res.headers.get('location');
          if (followRedirects && location && res.status >= 300 && res.status < 400 && hop < MAX_REDIRECTS) {
            await res.body?.cancel();
            const next = new URL(location, target);
            // Blob storage behind a redirect gets a signed URL; our token is not for it.
            if (next.origin !== new URL(target).origin) auth = undefined;
            target = next.toString();
            continue;
          }
          if (isTransientStatus(res.status) && attempt < this.#attempts) {
            await res.body?.cancel();
            lastError = new Error(`upstream answered ${res.status}`);
            break;
          }
          return res;
        }
      } catch (e) {
        if (signal?.aborted) throw signal.reason;
        lastError = e;
      }
      if (attempt < this.#attempts) await sleep(this.#backoffBaseMs * 2 ** (attempt - 1));
    }
    throw new OciError('UNAVAILABLE', 'upstream registry is unreachable', { upstream: this.host, reason: describe(lastError) }, { retryable: true });
  }
}

/** A short reason that never includes URLs (which may carry signed credentials). */
function describe(e: unknown): string {
  const err = e as { cause?: { code?: string }; message?: string };
  return err?.cause?.code ?? (err?.message !== undefined ? redactUrls(err.message) : 'unknown error');
}
