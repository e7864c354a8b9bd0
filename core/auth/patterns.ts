/**
 * Repository patterns of access rules, per upstream: `docker.io/library/*` (one path
 * segment), `ghcr.io/acme/**` (any depth, at least one segment), exact names otherwise.
 */

/** Undefined when `pattern` is usable, else what is wrong with it (for config validation). */
export function patternProblem(pattern: string): string | undefined {
  const [host, ...path] = pattern.split('/');
  if (!host || !/^(?:(?:[a-z0-9-]+\.)+[a-z0-9-]+|localhost)(?::\d+)?$/.test(host)) return 'must start with an upstream host, e.g. docker.io/library/*';
  if (path.length === 0) return 'must name repositories after the host, e.g. docker.io/** for all of them';
  for (const [i, s] of path.entries()) {
    if (s === '**' && i !== path.length - 1) return '** may only be the last segment';
    if (s !== '*' && s !== '**' && !/^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/.test(s)) return `"${s}" is not a repository path segment, * or **`;
  }
  return undefined;
}

/** Whether `repository` (a name on upstream `host`) is matched by `pattern`. */
export function matchesPattern(pattern: string, host: string, repository: string): boolean {
  const [phost, ...ppath] = pattern.split('/');
  if (phost !== host) return false;
  const path = repository.split('/');
  for (let i = 0; i < ppath.length; i++) {
    const p = ppath[i]!;
    if (p === '**') return path.length > i;
    if (i >= path.length || (p !== '*' && p !== path[i])) return false;
  }
  return path.length === ppath.length;
}
