// What every answered request leaves behind: its access log line and its request counter,
// written the same way whether the app answered it or the runtime gave a kept answer
// again (functions/replay.ts).
import type { Context } from 'hono';
import type { Metrics } from '../core/ports/metrics.ts';

/** The path the access log shows: the query's `access_token` redacted. */
export function loggedPath(c: Context): string {
  const query = c.req.url.indexOf('?');
  return c.req.path + (query < 0 ? '' : c.req.url.slice(query).replace(/(access_token=)[^&]*/g, '$1REDACTED'));
}

export interface AnsweredRequest {
  method: string;
  /** As `loggedPath` gives it. */
  path: string;
  /** The route's pattern, the counter's `route` label. */
  route: string;
  status: number;
  ms: number;
  /** Given again from a kept answer, without the app. */
  replayed?: true;
}

/** The access log line (the path has no credentials; headers are not logged) and `pullthrough_requests_total`. */
export function logRequest(log: (entry: Record<string, unknown>) => void, metrics: Metrics, request: AnsweredRequest): void {
  const { method, path, route, status, ms, replayed } = request;
  log({ msg: 'request', method, path, status, ms, ...(replayed ? { replayed } : {}) });
  metrics.count('pullthrough_requests_total', { route, method, status: String(status) });
}
