// The cold-work limit on Workers through Cloudflare's Rate Limiting binding
// ([[unsafe.bindings]] type "ratelimit" in wrangler.toml): counted across isolates of a
// location by Cloudflare, where the in-isolate bucket would count per isolate.
import type { RateLimiter, RateVerdict } from '../auth/rate-limit.ts';

/** The binding as the Workers runtime hands it over. */
export interface RateLimitBinding {
  limit(options: { key: string }): Promise<{ success: boolean }>;
}

export class CloudflareRateLimiter implements RateLimiter {
  readonly #binding: RateLimitBinding;
  readonly #periodSeconds: number;

  /** `periodSeconds`: the binding's `period` (10 or 60), which is how long a refused caller waits at most. */
  constructor(binding: RateLimitBinding, periodSeconds: number) {
    this.#binding = binding;
    this.#periodSeconds = periodSeconds;
  }

  async take(key: string): Promise<RateVerdict> {
    const { success } = await this.#binding.limit({ key });
    return success ? { allowed: true } : { allowed: false, retryAfterSeconds: this.#periodSeconds };
  }
}
