import type { MiddlewareHandler } from 'hono';
import { resolveTarget, splitImageReference } from '../core/oci/reference.ts';
import type { AppEnv } from './env.ts';

export interface RoutingConfig {
  upstreamHosts: ReadonlySet<string>;
  defaultUpstream: string;
  /** PUBLIC_URL: the prefix of URLs handed to clients; else the request's origin. */
  publicUrl?: string | undefined;
}

/**
 * Resolves what the request is about, once, before its route runs: the repository
 * target from the `name` route parameter (or, for `/api/rootfs/<image>`, from the image
 * reference, whose tag or digest lands in `c.var.reference`), on the upstream the `ns`
 * query or the first path segment names, and the real method; then whether the caller
 * may pull from it (functions/access.ts). Throws NAME_INVALID, DENIED (an upstream that is
 * not configured, or rules that do not let the caller in) and UNAUTHORIZED.
 */
export function target(routing: RoutingConfig, from: 'name' | 'image' = 'name'): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    let path = c.req.param(from) ?? '';
    if (from === 'image') {
      const split = splitImageReference(path);
      path = split.path;
      c.set('reference', split.reference);
    }
    const resolved = resolveTarget(path, c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream);
    c.set('target', resolved);
    c.set('method', c.req.method === 'HEAD' ? 'HEAD' : 'GET');
    c.get('authorize')(resolved);
    await next();
  };
}
