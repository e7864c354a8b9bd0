import { Hono } from 'hono';
import { getAcceptedManifest, type ManifestDeps } from '../core/registry/manifests.ts';
import { resolveTarget } from '../core/oci/reference.ts';
import { parseAccept } from '../core/oci/manifest.ts';

export interface RoutingConfig {
  upstreamHosts: ReadonlySet<string>;
  defaultUpstream: string;
  /** PUBLIC_URL: the prefix of URLs handed to clients; else the request's origin. */
  publicUrl?: string | undefined;
}

/** `GET|HEAD /v2/<name>/manifests/<reference>`. */
export function manifestRoutes(deps: ManifestDeps, routing: RoutingConfig): Hono {
  const app = new Hono();
  app.get('/:name{.+}/manifests/:reference', async (c) => {
    const target = resolveTarget(c.req.param('name'), c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream);
    const reference = c.req.param('reference');
    // Hono serves HEAD through GET handlers: look at the real method so HEAD never downloads.
    const method = c.req.method === 'HEAD' ? 'HEAD' : 'GET';
    const accept = c.req.header('accept');
    const manifest = await getAcceptedManifest(deps, target, reference, method, parseAccept(accept ? [accept] : []));
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
