import type { Metrics } from '../core/ports/metrics.ts';
import type { BlobAnswer } from '../core/registry/blobs.ts';
import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { getBlob, type BlobDeps } from '../core/registry/blobs.ts';
import { inBackground, type AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';
import { storedResponse, type ResponseHeaders } from './stored.ts';
import type { Replays } from './replay.ts';

const PASSED_HEADERS = ['content-length', 'content-range', 'content-type', 'etag', 'accept-ranges'];

/** `GET|HEAD /v2/<name>/blobs/<digest>`. */
export function blobRoutes(deps: BlobDeps, routing: RoutingConfig, metrics: Metrics, replays?: Replays): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/:name{.+}/blobs/:digest', target(routing), async (c) => {
    const method = c.get('method');
    const answer = await getBlob(admitting(deps, c.get('admit')), c.get('target'), c.req.param('digest'), method, c.req.header('range'));
    inBackground(c, answer.background);
    if (method === 'GET') countServed(metrics, 'blob', answer);
    const common = { 'Docker-Content-Digest': answer.digest, 'Docker-Distribution-API-Version': 'registry/2.0' };
    if (answer.kind === 'redirect') return new Response(null, { status: 307, headers: { ...common, Location: answer.url } });
    if (answer.kind === 'upstream') {
      const headers = new Headers(common);
      for (const h of PASSED_HEADERS) {
        const v = answer.response.headers.get(h);
        if (v !== null) headers.set(h, v);
      }
      return new Response(method === 'HEAD' ? null : answer.response.body, { status: answer.response.status, headers });
    }
    const headers: ResponseHeaders = { ...common, 'Content-Type': 'application/octet-stream', ETag: `"${answer.digest}"` };
    if (answer.kind === 'transfer') {
      if (answer.range && answer.size !== undefined) return storedResponse(c, method, headers, answer.size, answer.range, answer.body);
      if (answer.size !== undefined) headers['Content-Length'] = String(answer.size);
      return new Response(answer.body, { status: 200, headers });
    }
    const response = await storedResponse(c, method, headers, answer.size, answer.range, answer.body, answer.file);
    if (method === 'HEAD') replays?.keepBlobHead(c, answer.digest, headers);
    return response;
  });
  return app;
}

/** A blob GET for the metrics: hit or miss, and the bytes sent by where they come from. */
function countServed(metrics: Metrics, kind: 'blob', answer: BlobAnswer): void {
  const hit = answer.kind === 'stored' || answer.kind === 'redirect';
  metrics.count('pullthrough_cache_requests_total', { kind, result: hit ? 'hit' : 'miss' });
  const bytes =
    answer.kind === 'upstream'
      ? Number(answer.response.headers.get('content-length') ?? 0)
      : answer.kind === 'redirect'
        ? answer.size
        : answer.range
          ? answer.range.end - answer.range.start + 1
          : (answer.size ?? 0);
  metrics.count('pullthrough_served_bytes_total', { source: answer.kind === 'stored' ? 'store' : answer.kind }, bytes);
}
