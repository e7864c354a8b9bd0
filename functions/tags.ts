import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { listTags, type TagDeps } from '../core/registry/tags.ts';
import type { AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';

/** `GET /v2/<name>/tags/list`, paged with `n` and `last`. */
export function tagRoutes(deps: TagDeps, routing: RoutingConfig): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/:name{.+}/tags/list', target(routing), async (c) => {
    const pathName = c.req.param('name');
    const ns = c.req.query('ns');
    const page = await listTags(admitting(deps, c.get('admit')), c.get('target'), c.req.query('n'), c.req.query('last'));
    if (page.next) {
      // The next page is ours, under the name the client used (with its `ns`).
      const query = new URLSearchParams();
      if (page.next.n !== undefined) query.set('n', String(page.next.n));
      query.set('last', page.next.last);
      if (ns) query.set('ns', ns);
      c.header('Link', `</v2/${pathName}/tags/list?${query}>; rel="next"`);
    }
    c.header('Docker-Distribution-API-Version', 'registry/2.0');
    return c.json({ name: pathName, tags: page.tags });
  });
  return app;
}
