import { Hono, type Context } from 'hono';
import { getLayerFile, getLayerObject, type LayerDeps } from '../core/sandbox/layer-files.ts';
import type { AppEnv } from './env.ts';
import { storedResponse } from './stored.ts';

/** Per extracted layer: `GET|HEAD /api/layers/<diff_id>/{tar,toc,files/<path>}`. */
export function layerRoutes(layers: LayerDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const methodOf = (c: Context) => (c.req.method === 'HEAD' ? 'HEAD' : 'GET');

  const object = (which: 'tar' | 'toc') => async (c: Context<AppEnv>) => {
    const method = methodOf(c);
    const answer = await getLayerObject(layers, c.req.param('diffId')!, which, method, c.req.header('range'));
    if (answer.kind === 'redirect') return c.redirect(answer.url, 307);
    return storedResponse(method, new Headers({ 'Content-Type': answer.contentType }), answer.size, answer.range, answer.body);
  };
  app.get('/layers/:diffId/tar', object('tar'));
  app.get('/layers/:diffId/toc', object('toc'));

  app.get('/layers/:diffId/files/:path{.+}', async (c) => {
    const method = methodOf(c);
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
