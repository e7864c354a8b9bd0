import { Hono } from 'hono';
import { exportImage } from '../core/registry/export.ts';
import type { ManifestDeps } from '../core/registry/manifests.ts';
import { admitting } from '../core/registry/admission.ts';
import { parsePlatform } from '../core/oci/manifest.ts';
import type { AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';

/**
 * `GET /api/export/<image>[?platform=os/arch]`: a cached image as an OCI image layout tar
 * (core/registry/export.ts), for whoever may pull it; refused (BLOB_UNKNOWN) before a
 * byte is sent when a blob is not stored.
 */
export function exportRoutes(deps: ManifestDeps, routing: RoutingConfig): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/export/:image{.+}', target(routing, 'image'), async (c) => {
    const platform = c.req.query('platform');
    const exported = await exportImage(admitting(deps, c.get('admit')), c.get('target'), c.get('reference'), platform ? parsePlatform(platform) : undefined);
    const file = `${c.get('target').name.replace(/\//g, '_')}-${c.get('reference').replace(/[^A-Za-z0-9._-]/g, '_')}.tar`;
    return new Response(exported.body, {
      status: 200,
      headers: {
        'Content-Type': 'application/x-tar',
        'Content-Length': String(exported.size),
        'Content-Disposition': `attachment; filename="${file}"`,
        'Docker-Content-Digest': exported.digest,
        'Cache-Control': 'no-store',
      },
    });
  });
  return app;
}
