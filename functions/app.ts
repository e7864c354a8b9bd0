import { Hono } from 'hono';
import { OciError } from '../core/errors.ts';
import { errorResponse } from './errors.ts';

/**
 * The HTTP app. Handlers only translate HTTP to core calls; the manifest, blob, tag and
 * referrer routes are mounted here as they are built (see the open mirror issue).
 */
export function createApp(): Hono {
  const app = new Hono();
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
