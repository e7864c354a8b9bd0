import type { Metrics } from '../core/ports/metrics.ts';
import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { getAcceptedManifest, type ManifestDeps } from '../core/registry/manifests.ts';
import { parseAccept } from '../core/oci/manifest.ts';
import { inBackground, type AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';

/** `GET|HEAD /v2/<name>/manifests/<reference>`. */
export function manifestRoutes(deps: ManifestDeps, routing: RoutingConfig, metrics: Metrics): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/:name{.+}/manifests/:reference', target(routing), async (c) => {
    const method = c.get('method');
    const accept = c.req.header('accept');
    const manifest = await getAcceptedManifest(admitting(deps, c.get('admit')), c.get('target'), c.req.param('reference'), method, parseAccept(accept ? [accept] : []));
    inBackground(c, manifest.background);
    if (method === 'GET') metrics.count('pullthrough_cache_requests_total', { kind: 'manifest', result: manifest.fromStore ? 'hit' : 'miss' });
    const headers = {
      'Content-Type': manifest.mediaType,
      'Content-Length': String(manifest.size),
      'Docker-Content-Digest': manifest.digest,
      'Docker-Distribution-API-Version': 'registry/2.0',
      ETag: `"${manifest.digest}"`,
    };
    return new Response(method === 'HEAD' ? null : (manifest.bytes as Uint8Array<ArrayBuffer>), { status: 200, headers });
  });
  return app;
}
