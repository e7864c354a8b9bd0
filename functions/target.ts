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
 * query or the first path segment names, and the real method. Throws NAME_INVALID and
 * DENIED (an upstream that is not configured). Authentication hooks in here.
 */
export function target(routing: RoutingConfig, from: 'name' | 'image' = 'name'): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    let path = c.req.param(from) ?? '';
    if (from === 'image') {
      const split = splitImageReference(path);
      path = split.path;
      c.set('reference', split.reference);
    }
    c.set('target', resolveTarget(path, c.req.query('ns'), routing.upstreamHosts, routing.defaultUpstream));
    c.set('method', c.req.method === 'HEAD' ? 'HEAD' : 'GET');
    await next();
  };
}
