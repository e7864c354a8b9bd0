import type { Clock } from '../ports/clock.ts';

type Presign = (key: string, ttlSeconds: number, options?: { contentType?: string }) => Promise<string | undefined>;

/**
 * Presigned URLs reused while more than half their lifetime is left, so that warm
 * redirects do not sign every time: a client handed a reused URL still has at least
 * PRESIGN_TTL_SECONDS / 2 to use it. Retention cannot delete the object under it meanwhile:
 * a redirect counts as a pull, and nothing pulled within the presign lifetime is evicted.
 * Bounded by entries (the least recently signed go first).
 */
export class PresignedUrls {
  readonly #presign: Presign;
  readonly #clock: Clock;
  readonly #ttlSeconds: number;
  readonly #maxEntries: number;
  readonly #entries = new Map<string, { url: string; signedAt: number }>();

  constructor(presign: Presign, clock: Clock, ttlSeconds: number, maxEntries = 10_000) {
    this.#presign = presign;
    this.#clock = clock;
    this.#ttlSeconds = ttlSeconds;
    this.#maxEntries = maxEntries;
  }

  async url(key: string, options?: { contentType?: string }): Promise<string | undefined> {
    const id = `${key}\n${options?.contentType ?? ''}`;
    const now = this.#clock();
    const kept = this.#entries.get(id);
    if (kept && now - kept.signedAt < (this.#ttlSeconds * 1000) / 2) return kept.url;
    const url = await this.#presign(key, this.#ttlSeconds, options);
    this.#entries.delete(id);
    if (url === undefined) return undefined;
    this.#entries.set(id, { url, signedAt: now });
    if (this.#entries.size > this.#maxEntries) this.#entries.delete(this.#entries.keys().next().value!);
    return url;
  }
}
