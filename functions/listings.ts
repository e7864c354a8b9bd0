import { Hono } from 'hono';
import { listReferrers, listTags, type ListingDeps } from '../core/registry/tags.ts';
import { resolveTarget } from '../core/oci/reference.ts';
import { MediaType } from '../core/oci/manifest.ts';
import type { RoutingConfig } from './manifests.ts';

/** `GET /v2/<name>/tags/list` and `GET /v2/<name>/referrers/<digest>`, passed through. */
export function listingRoutes(deps: ListingDeps, routing: RoutingConfig): Hono {
  const app = new Hono();
  app.get('/:name{.+}/tags/list', async (c) => {
    const pathName = c.req.param('name');
    const ns = c.req.query('ns');
    const target = resolveTarget(pathName, ns, routing.upstreamHosts, routing.defaultUpstream);
    const page = await listTags(deps, target, c.req.query('n'), c.req.query('last'));
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
  app.get('/:name{.+}/referrers/:digest', async (c) => {
    const target = resolveTarget(c.req.param('name'), c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream);
    const answer = await listReferrers(deps, target, c.req.param('digest'), c.req.query('artifactType'));
    const headers = new Headers({ 'Content-Type': MediaType.OciIndex, 'Docker-Distribution-API-Version': 'registry/2.0' });
    if (answer.filtersApplied) headers.set('OCI-Filters-Applied', answer.filtersApplied);
    return new Response(c.req.method === 'HEAD' ? null : (answer.bytes as Uint8Array<ArrayBuffer>), { status: 200, headers });
  });
  return app;
}
