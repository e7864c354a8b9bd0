import { OciError } from '../oci/errors.ts';

/** A configured upstream (UPSTREAMS): where it is, and the credentials we pull with, if any. */
export interface UpstreamConfig {
  /** Base URL, e.g. `https://registry-1.docker.io`. */
  url: string;
  username?: string | undefined;
  password?: string | undefined;
}

/**
 * One configured upstream registry (the HTTP client in core/adapters/http-upstream.ts).
 * Only configured upstreams exist: nothing else is ever contacted.
 */
export interface Upstream {
  readonly host: string;
  /**
   * Sends `method path` (path starts with `/v2/`) for repository `name`, with the
   * registry's auth flow done for us. Resolves with the final response whatever its
   * status; throws UNAVAILABLE (retryable) when the upstream cannot be reached,
   * UNAUTHORIZED when it refuses our credentials. Aborting `signal` stops the request and
   * errors the body with the signal's reason.
   */
  request(method: 'GET' | 'HEAD', path: string, name: string, headers?: Record<string, string>, signal?: AbortSignal): Promise<Response>;
}

export type Upstreams = ReadonlyMap<string, Upstream>;

/**
 * Statuses that say "the upstream is having a moment": the HTTP client retries them at
 * once a few times, and what is still failing after that is a retryable UNAVAILABLE.
 * 429 is not here: a rate limit is TOOMANYREQUESTS, retried later, never at once.
 */
const TRANSIENT_STATUSES: ReadonlySet<number> = new Set([408, 500, 502, 503, 504]);

export const isTransientStatus = (status: number): boolean => TRANSIENT_STATUSES.has(status);

/** The client for `host`. Throws DENIED for a host that is not configured. */
export function selectUpstream(upstreams: Upstreams, host: string): Upstream {
  const upstream = upstreams.get(host);
  if (!upstream) throw new OciError('DENIED', 'upstream registry is not configured', { upstream: host });
  return upstream;
}

/** A 429 as the client's error, with the upstream's Retry-After. Retryable. */
export function tooManyRequests(host: string, res: Response): OciError {
  const retryAfter = Number(res.headers.get('retry-after'));
  return new OciError('TOOMANYREQUESTS', 'upstream rate limit reached', { upstream: host }, {
    retryAfterSeconds: Number.isFinite(retryAfter) && retryAfter > 0 ? retryAfter : undefined,
    retryable: true,
  });
}

/**
 * The error for a non-OK upstream answer (its body is discarded): `notFound` for 404,
 * TOOMANYREQUESTS for 429, RANGE_INVALID for 416, DENIED for 401/403, UNAVAILABLE
 * otherwise (retryable when the status is transient).
 */
export async function upstreamError(res: Response, host: string, notFound: OciError): Promise<OciError> {
  await res.body?.cancel();
  if (res.status === 404) return notFound;
  if (res.status === 429) return tooManyRequests(host, res);
  // A Range passed through that the upstream cannot satisfy: the client's to fix, not ours.
  if (res.status === 416) return new OciError('RANGE_INVALID', 'requested range not satisfiable', { upstream: host, range: res.headers.get('content-range') });
  if (res.status === 401 || res.status === 403) return new OciError('DENIED', 'upstream denied access', { upstream: host, status: res.status });
  return new OciError('UNAVAILABLE', 'upstream registry failed', { upstream: host, status: res.status }, { retryable: isTransientStatus(res.status) });
}
