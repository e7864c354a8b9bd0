/**
 * The cold-work limit: how often one caller (an identity, or an address for anonymous)
 * may make the mirror contact an upstream. A port with two implementations: a token bucket
 * in this process or isolate (Node; a Worker without a binding), and Cloudflare's Rate
 * Limiting binding (core/adapters/cloudflare-rate-limiter.ts).
 */

export type RateVerdict = { allowed: true } | { allowed: false; retryAfterSeconds: number };

export interface RateLimiter {
  /** Takes one request's worth for `key`. */
  take(key: string): Promise<RateVerdict>;
}

/** Keys remembered at most; the least recently used go first (a full bucket is the same as none). */
const MAX_KEYS = 10_000;

/** `perMinute` requests a minute per key, up to `perMinute` at once after a quiet minute. */
export class MemoryRateLimiter implements RateLimiter {
  readonly #perMinute: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(perMinute: number, now: () => number = Date.now) {
    this.#perMinute = perMinute;
    this.#now = now;
  }

  async take(key: string): Promise<RateVerdict> {
    const now = this.#now();
    const perMs = this.#perMinute / 60_000;
    const bucket = this.#buckets.get(key) ?? { tokens: this.#perMinute, at: now };
    this.#buckets.delete(key);
    bucket.tokens = Math.min(this.#perMinute, bucket.tokens + (now - bucket.at) * perMs);
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > MAX_KEYS) this.#buckets.delete(this.#buckets.keys().next().value!);
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1;
      return { allowed: true };
    }
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / perMs / 1000)) };
  }
}
