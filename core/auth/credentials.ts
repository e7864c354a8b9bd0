/**
 * What a client presents: `Authorization: Basic …` or `Bearer …`, and the `scope`
 * parameters of a token request. Parsers of untrusted input: they return undefined for
 * anything malformed and never throw.
 */

export type Credentials = { scheme: 'basic'; user: string; password: string } | { scheme: 'bearer'; token: string };

export function parseAuthorization(header: string | null | undefined): Credentials | undefined {
  if (!header || header.length > 8192) return undefined;
  const m = /^\s*([A-Za-z]+)\s+([^\s]+)\s*$/.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  const value = m[2]!;
  if (scheme === 'bearer') return /^[A-Za-z0-9._~+/=-]+$/.test(value) ? { scheme, token: value } : undefined;
  if (scheme !== 'basic' || !/^[A-Za-z0-9+/]+={0,2}$/.test(value) || value.length % 4 !== 0) return undefined;
  let decoded: string;
  try {
    const bytes = Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
    decoded = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return undefined;
  }
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { scheme, user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** One `scope=repository:<name>:<actions>` of a token request; undefined when it is not one. */
export function parseScope(scope: string): { name: string; actions: string[] } | undefined {
  const m = /^repository(?:\([a-z]+\))?:([^:\s]+(?::\d+)?(?:\/[^:\s]+)*):([a-z*,]+)$/.exec(scope);
  if (!m) return undefined;
  const actions = m[2]!.split(',').filter(Boolean);
  return actions.length ? { name: m[1]!, actions } : undefined;
}
