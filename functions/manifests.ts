import { Hono } from 'hono';
import { getManifest, type ManifestDeps } from '../core/manifests.ts';
import { resolveTarget } from '../core/reference.ts';
import { OciError } from '../core/errors.ts';
import { accepts, parseAccept } from '../core/manifest.ts';

export interface RoutingConfig {
  upstreamHosts: ReadonlySet<string>;
  defaultUpstream: string;
}

/** `GET|HEAD /v2/<name>/manifests/<reference>`. */
export function manifestRoutes(deps: ManifestDeps, routing: RoutingConfig): Hono {
  const app = new Hono();
  app.get('/:name{.+}/manifests/:reference', async (c) => {
    const target = resolveTarget(c.req.param('name'), c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream);
    const reference = c.req.param('reference');
    // Hono serves HEAD through GET handlers: look at the real method so HEAD never downloads.
    const method = c.req.method === 'HEAD' ? 'HEAD' : 'GET';
    const manifest = await getManifest(deps, target, reference, method);
    const accepted = parseAccept(c.req.raw.headers.get('accept') ? [c.req.raw.headers.get('accept')!] : []);
    if (!accepts(accepted, manifest.mediaType)) {
      throw new OciError('MANIFEST_UNKNOWN', 'manifest is not available in an accepted media type', { mediaType: manifest.mediaType, accepted });
    }
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
