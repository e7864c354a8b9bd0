import { Hono, type Context } from 'hono';
import { rootfsPlan, parsePlatform, type PlanDeps } from '../core/sandbox/plan.ts';
import { getLayerFile, getLayerObject, type LayerDeps } from '../core/sandbox/layer-files.ts';
import { resolveTarget, splitImageReference } from '../core/oci/reference.ts';
import type { RoutingConfig } from './manifests.ts';
import { storedResponse } from './stored.ts';

/** Seconds a client should wait before asking for a plan again while layers extract. */
const PLAN_RETRY_AFTER_SECONDS = 2;

/**
 * The sandbox API: `GET /api/rootfs/<image>?platform=os/arch[/variant]` (the layer plan),
 * and per extracted layer `GET|HEAD /api/layers/<diff_id>/{tar,toc,files/<path>}`.
 */
export function layerRoutes(plan: PlanDeps, layers: LayerDeps, routing: RoutingConfig): Hono {
  const app = new Hono();

  app.get('/rootfs/:image{.+}', async (c) => {
    const { path, reference } = splitImageReference(c.req.param('image'));
    const target = resolveTarget(path, c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream);
    const platformText = c.req.query('platform');
    const answer = await rootfsPlan(plan, target, reference, platformText ? parsePlatform(platformText) : undefined);
    // Behind a proxy (TLS terminated in front), the request's origin is not the client's.
    const origin = routing.publicUrl ?? new URL(c.req.url).origin;
    const body = {
      ...answer,
      layers: answer.layers.map((l) => {
        const base = `${origin}/api/layers/${l.diff_id}`;
        return l.state === 'ready' ? { ...l, tar_url: l.tar_url ?? `${base}/tar`, toc_url: l.toc_url ?? `${base}/toc`, files_url: `${base}/files/` } : l;
      }),
    };
    const waiting = answer.layers.some((l) => l.state === 'pending' || l.state === 'extracting');
    if (waiting) c.header('Retry-After', String(PLAN_RETRY_AFTER_SECONDS));
    c.header('Cache-Control', 'no-store'); // presigned URLs expire
    return c.json(body, waiting ? 202 : 200);
  });

  const object = (which: 'tar' | 'toc') => async (c: Context) => {
    const method = c.req.method === 'HEAD' ? 'HEAD' : 'GET';
    const answer = await getLayerObject(layers, c.req.param('diffId')!, which, method, c.req.header('range'));
    if (answer.kind === 'redirect') return c.redirect(answer.url, 307);
    return storedResponse(method, new Headers({ 'Content-Type': answer.contentType }), answer.size, answer.range, answer.body);
  };
  app.get('/layers/:diffId/tar', object('tar'));
  app.get('/layers/:diffId/toc', object('toc'));

  app.get('/layers/:diffId/files/:path{.+}', async (c) => {
    const method = c.req.method === 'HEAD' ? 'HEAD' : 'GET';
    const answer = await getLayerFile(layers, c.req.param('diffId'), decodeURIComponent(c.req.param('path')), method, c.req.header('range'));
    const headers = new Headers({
      'Content-Type': 'application/octet-stream',
      ETag: `"${answer.entry.digest}"`,
      'X-File-Mode': answer.entry.mode.toString(8).padStart(4, '0'),
    });
    return storedResponse(method, headers, answer.size, answer.range, answer.body);
  });
  return app;
}
