import { Hono } from 'hono';
import { OciError } from '../core/oci/errors.ts';
import { errorResponse } from './errors.ts';
import { manifestRoutes, type RoutingConfig } from './manifests.ts';
import type { ManifestDeps } from '../core/registry/manifests.ts';
import { blobRoutes } from './blobs.ts';
import type { BlobDeps } from '../core/registry/blobs.ts';
import { listingRoutes } from './listings.ts';
import { layerRoutes } from './layers.ts';
import type { PlanDeps } from '../core/sandbox/plan.ts';
import type { LayerDeps } from '../core/sandbox/layer-files.ts';

export interface AppDeps {
  manifests: ManifestDeps;
  blobs: BlobDeps;
  routing: RoutingConfig;
  plan: PlanDeps;
  layers: LayerDeps;
  /** The access log: one entry per request (the path has no credentials; headers are not logged). */
  log?: (entry: Record<string, unknown>) => void;
}

/** The HTTP app. Handlers only translate HTTP to core calls. */
export function createApp(deps?: AppDeps): Hono {
  const app = new Hono();
  const log = deps?.log;
  if (log) {
    app.use(async (c, next) => {
      const started = performance.now();
      await next();
      const url = new URL(c.req.url);
      log({ msg: 'request', method: c.req.method, path: url.pathname + url.search, status: c.res.status, ms: Math.round(performance.now() - started) });
    });
  }
  if (deps) {
    app.route('/v2', manifestRoutes(deps.manifests, deps.routing));
    app.route('/v2', blobRoutes(deps.blobs, deps.routing));
    app.route('/v2', listingRoutes(deps.blobs, deps.routing));
    app.route('/api', layerRoutes(deps.plan, deps.layers, deps.routing));
  }
  app.get('/v2/', (c) => {
    c.header('Docker-Distribution-API-Version', 'registry/2.0');
    return c.json({});
  });
  app.notFound(() => {
    throw new OciError('UNSUPPORTED', 'the operation is unsupported');
  });
  app.onError((err, c) => errorResponse(c, err));
  return app;
}
