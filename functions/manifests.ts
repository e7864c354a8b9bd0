import type { Metrics } from '../core/ports/metrics.ts';
import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { getAcceptedManifest, type ManifestDeps } from '../core/registry/manifests.ts';
import { parseAccept } from '../core/oci/manifest.ts';
import { remembered } from '../core/memo.ts';
import { inBackground, type AppEnv } from './env.ts';
import type { Replays } from './replay.ts';
import { target, type RoutingConfig } from './target.ts';

/** Accept headers seen, parsed: clients send a handful of distinct ones, each on every pull. */
const ACCEPT_MEMO_ENTRIES = 256;
const ACCEPT_MEMO_MAX_LENGTH = 1024;
const acceptMemo = new Map<string, readonly string[]>();

/** The media types an Accept header lists (parseAccept), remembered per header value; none without one. */
function acceptedTypes(accept: string | undefined): readonly string[] {
  if (!accept) return [];
  if (accept.length > ACCEPT_MEMO_MAX_LENGTH) return parseAccept([accept]);
  return remembered(acceptMemo, ACCEPT_MEMO_ENTRIES, accept, () => Object.freeze(parseAccept([accept])));
}

/** `GET|HEAD /v2/<name>/manifests/<reference>`. */
export function manifestRoutes(deps: ManifestDeps, routing: RoutingConfig, metrics: Metrics, replays?: Replays): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/:name{.+}/manifests/:reference', target(routing), async (c) => {
    const method = c.get('method');
    const reference = c.req.param('reference');
    const manifest = await getAcceptedManifest(admitting(deps, c.get('admit')), c.get('target'), reference, method, acceptedTypes(c.req.header('accept')));
    inBackground(c, manifest.background);
    if (method === 'GET') metrics.count('pullthrough_cache_requests_total', { kind: 'manifest', result: manifest.fromStore ? 'hit' : 'miss' });
    const headers = {
      'Content-Type': manifest.mediaType,
      'Content-Length': String(manifest.size),
      'Docker-Content-Digest': manifest.digest,
      'Docker-Distribution-API-Version': 'registry/2.0',
      ETag: `"${manifest.digest}"`,
    };
    replays?.keepManifest(c, c.get('target'), reference, manifest, headers, manifest.bytes);
    return new Response(method === 'HEAD' ? null : (manifest.bytes as Uint8Array<ArrayBuffer>), { status: 200, headers });
  });
  return app;
}
