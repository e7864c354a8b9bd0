import type { Metrics } from '../core/ports/metrics.ts';
import { Hono, type Context } from 'hono';
import { getLayerFile, getLayerObject, type LayerDeps } from '../core/sandbox/layer-files.ts';
import type { AppEnv } from './env.ts';
import { storedResponse } from './stored.ts';
import { target, type RoutingConfig } from './target.ts';

/**
 * Per extracted layer, reached through a repository the caller may read (as a blob is):
 * `GET|HEAD /api/layers/<name>/<diff_id>/{tar,toc,files/<path>}`, `<name>` as in `/v2/`.
 */
export function layerRoutes(layers: LayerDeps, routing: RoutingConfig, metrics: Metrics): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const methodOf = (c: Context) => (c.req.method === 'HEAD' ? 'HEAD' : 'GET');

  const object = (which: 'tar' | 'toc') => async (c: Context<AppEnv>) => {
    const method = methodOf(c);
    const answer = await getLayerObject(layers, c.get('target'), c.req.param('diffId')!, which, method, c.req.header('range'));
    if (method === 'GET') metrics.count('pullthrough_cache_requests_total', { kind: 'layer', result: 'hit' });
    if (answer.kind === 'redirect') return c.redirect(answer.url, 307);
    if (method === 'GET') metrics.count('pullthrough_served_bytes_total', { source: 'store' }, answer.range ? answer.range.end - answer.range.start + 1 : answer.size);
    return storedResponse(c, method, { 'Content-Type': answer.contentType }, answer.size, answer.range, answer.body, answer.file);
  };
  app.get('/layers/:name{.+}/:diffId{[a-z0-9]+:[^/]+}/tar', target(routing), object('tar'));
  app.get('/layers/:name{.+}/:diffId{[a-z0-9]+:[^/]+}/toc', target(routing), object('toc'));

  app.get('/layers/:name{.+}/:diffId{[a-z0-9]+:[^/]+}/files/:path{.+}', target(routing), async (c) => {
    const method = methodOf(c);
    const answer = await getLayerFile(layers, c.get('target'), c.req.param('diffId'), decodeURIComponent(c.req.param('path')), method, c.req.header('range'));
    const headers = {
      'Content-Type': 'application/octet-stream',
      ETag: `"${answer.entry.digest}"`,
      'X-File-Mode': answer.entry.mode.toString(8).padStart(4, '0'),
    };
    return storedResponse(c, method, headers, answer.size, answer.range, answer.body, answer.file);
  });
  return app;
}
