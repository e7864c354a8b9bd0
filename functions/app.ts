import { Hono } from 'hono';
import { OciError } from '../core/errors.ts';
import { errorResponse } from './errors.ts';
import { manifestRoutes, type RoutingConfig } from './manifests.ts';
import type { ManifestDeps } from '../core/manifests.ts';
import { blobRoutes } from './blobs.ts';
import type { BlobDeps } from '../core/blobs.ts';
import { listingRoutes } from './listings.ts';

export interface AppDeps {
  manifests: ManifestDeps;
  blobs: BlobDeps;
  routing: RoutingConfig;
}

/** The HTTP app. Handlers only translate HTTP to core calls. */
export function createApp(deps?: AppDeps): Hono {
  const app = new Hono();
  if (deps) {
    app.route('/v2', manifestRoutes(deps.manifests, deps.routing));
    app.route('/v2', blobRoutes(deps.blobs, deps.routing));
    app.route('/v2', listingRoutes(deps.blobs, deps.routing));
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
