import { Hono } from 'hono';
import { OciError } from '../core/oci/errors.ts';
import { importArchive, type ImportDeps } from '../core/cache/import.ts';
import { isTag, resolveTarget } from '../core/oci/reference.ts';
import { requireGrant, type AccessDeps } from './access.ts';
import type { AppEnv } from './env.ts';
import type { RoutingConfig } from './target.ts';
import { toWire } from './wire.ts';

/**
 * `POST /api/import?as=<repository>[:<tag>]` (admin): the body is an OCI image layout as
 * a tar, or a docker save archive, streamed (core/cache/import.ts); 201 with what was
 * imported, or an OCI error naming the member at fault, and then nothing was kept.
 */
export function importRoutes(deps: ImportDeps, routing: RoutingConfig, access: AccessDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post('/import', requireGrant(access, 'admin'), async (c) => {
    const as = c.req.query('as') ?? '';
    if (as === '' || as.includes('@')) throw new OciError('REQUEST_INVALID', 'name the repository to import into, with a tag unless the archive names its own: ?as=docker.io/library/alpine:3.20', { as });
    const colon = as.lastIndexOf(':');
    const tagged = colon > as.lastIndexOf('/');
    const target = resolveTarget(tagged ? as.slice(0, colon) : as, undefined, routing.upstreamHosts, routing.defaultUpstream);
    const tag = tagged ? as.slice(colon + 1) : undefined;
    if (tag !== undefined && !isTag(tag)) throw new OciError('TAG_INVALID', 'not a tag', { tag });
    const body = c.req.raw.body;
    if (!body) throw new OciError('REQUEST_INVALID', 'the body must be the archive (a tar)', {});
    const report = await importArchive(deps, body, { target, tag });
    return c.json(toWire(report), 201);
  });
  return app;
}
