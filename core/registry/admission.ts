import type { Upstream, Upstreams } from '../ports/upstream.ts';

/**
 * The read path's dependencies for one request whose cold work is limited: every upstream
 * request first calls `admit` (which throws TOOMANYREQUESTS when the caller is over its
 * rate), and so does joining a blob's transfer (`admit` on the deps). Work shared with a
 * request already running (one tag resolution, one transfer) is not counted again.
 */
export function admitting<T extends { upstreams: Upstreams; admit?: (() => Promise<void>) | undefined }>(deps: T, admit: (() => Promise<void>) | undefined): T {
  if (!admit) return deps;
  const upstreams = new Map<string, Upstream>();
  for (const [host, upstream] of deps.upstreams) {
    upstreams.set(host, {
      host: upstream.host,
      async request(...args) {
        await admit();
        return upstream.request(...args);
      },
    });
  }
  return { ...deps, upstreams, admit };
}
