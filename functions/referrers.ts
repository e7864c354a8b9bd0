import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { listReferrers } from '../core/registry/referrers.ts';
import type { Upstreams } from '../core/ports/upstream.ts';
import { MediaType } from '../core/oci/manifest.ts';
import type { AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';

/** `GET|HEAD /v2/<name>/referrers/<digest>`, passed through from the upstream. */
export function referrerRoutes(deps: { upstreams: Upstreams }, routing: RoutingConfig): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/:name{.+}/referrers/:digest', target(routing), async (c) => {
    const answer = await listReferrers(admitting(deps, c.get('admit')), c.get('target'), c.req.param('digest'), c.req.query('artifactType'));
    const headers = new Headers({ 'Content-Type': MediaType.OciIndex, 'Docker-Distribution-API-Version': 'registry/2.0' });
    if (answer.filtersApplied) headers.set('OCI-Filters-Applied', answer.filtersApplied);
    return new Response(c.get('method') === 'HEAD' ? null : (answer.bytes as Uint8Array<ArrayBuffer>), { status: 200, headers });
  });
  return app;
}
