import type { Catalog } from '../ports/catalog.ts';
import type { Clock } from '../ports/clock.ts';
import { selectUpstream, upstreamError, type Upstreams } from '../ports/upstream.ts';
import { OciError, isOciError } from '../oci/errors.ts';
import { digestOf } from '../oci/digest.ts';
import { MANIFEST_MEDIA_TYPES } from '../oci/manifest.ts';
import { MAX_LISTING_BYTES, MAX_MANIFEST_BYTES, readCapped } from '../oci/limits.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import type { Flights } from './flights.ts';

export interface TagDeps {
  catalog: Catalog;
  upstreams: Upstreams;
  clock: Clock;
  /** How long a tag's resolution is reused before the upstream is asked again. */
  tagTtlSeconds: number;
  /** Resolutions running now, by repository and tag: concurrent requests share one upstream HEAD. */
  tagFlights: Flights<string>;
}

export const MANIFEST_ACCEPT = { accept: MANIFEST_MEDIA_TYPES.join(', ') };

const manifestUnknown = (res: Response, target: RepositoryTarget, reference: string): Promise<OciError> =>
  upstreamError(res, target.upstream, new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { name: target.name, reference }));

/**
 * Resolves a tag to a digest: the cached digest while younger than TAG_TTL_SECONDS, else
 * an upstream HEAD (which Docker Hub does not count as a pull); when the upstream is
 * down, errors or rate-limits, the last known digest (stale-if-error). Throws
 * MANIFEST_UNKNOWN when the upstream has no such tag, or the upstream's error when
 * nothing is cached.
 */
export async function resolveTag(deps: TagDeps, target: RepositoryTarget, tag: string): Promise<string> {
  const now = deps.clock();
  const cached = await deps.catalog.tag(target, tag);
  if (cached && now - cached.resolvedAt < deps.tagTtlSeconds * 1000) return cached.digest;
  return deps.tagFlights.run(`${target.upstream}/${target.name}:${tag}`, () => resolveUpstream(deps, target, tag, cached, now));
}

/** The upstream's answer for a tag, remembered; the cached digest when the upstream fails. */
async function resolveUpstream(deps: TagDeps, target: RepositoryTarget, tag: string, cached: { digest: string } | undefined, now: number): Promise<string> {
  const upstream = selectUpstream(deps.upstreams, target.upstream);
  let digest: string | undefined;
  try {
    const path = `/v2/${target.name}/manifests/${tag}`;
    const res = await upstream.request('HEAD', path, target.name, MANIFEST_ACCEPT);
    if (!res.ok) throw await manifestUnknown(res, target, tag);
    digest = res.headers.get('docker-content-digest') ?? undefined;
    if (!digest) {
      // Some registries omit the header on HEAD: hash the (capped) body instead.
      const get = await upstream.request('GET', path, target.name, MANIFEST_ACCEPT);
      if (!get.ok) throw await manifestUnknown(get, target, tag);
      digest = digestOf(await readCapped(get, MAX_MANIFEST_BYTES));
    }
    parseDigest(digest);
  } catch (e) {
    const stale = cached && isOciError(e) && e.code !== 'MANIFEST_UNKNOWN';
    if (stale) return cached.digest;
    throw e;
  }
  await deps.catalog.putTag(target, tag, digest, now);
  return digest;
}

export interface TagPage {
  tags: string[];
  /** Present when the upstream has more: the query of the next page. */
  next?: { n?: number; last: string };
}

/** `n` as the spec allows it: a non-negative integer. Throws PAGINATION_NUMBER_INVALID. */
export function parsePageSize(n: string | undefined): number | undefined {
  if (n === undefined || n === '') return undefined;
  if (!/^\d{1,9}$/.test(n)) throw new OciError('PAGINATION_NUMBER_INVALID', 'invalid number of results requested', { n });
  return Number(n);
}

/** The `n` and `last` of an upstream `Link: <...>; rel="next"` header, if it has one. */
export function parseNextLink(header: string | null): TagPage['next'] {
  if (!header) return undefined;
  for (const part of header.split(',')) {
    const m = /<([^>]*)>\s*;(.*)$/.exec(part.trim());
    if (!m || !/rel="?next"?/.test(m[2]!)) continue;
    const query = new URL(m[1]!, 'http://upstream.invalid').searchParams;
    const last = query.get('last');
    if (last === null) return undefined;
    const n = query.get('n');
    return n !== null && /^\d{1,9}$/.test(n) ? { n: Number(n), last } : { last };
  }
  return undefined;
}

/**
 * One page of a repository's tags, passed through from its upstream (paged here when the
 * upstream ignored `n`). A complete list (asked for without `n` or `last`, and not paged by
 * the upstream) is remembered; when the upstream is down, errors or rate-limits, the last
 * one is served instead, paged here. Throws PAGINATION_NUMBER_INVALID, NAME_UNKNOWN, and
 * when nothing is remembered UPSTREAM_INVALID, UNAVAILABLE, TOOMANYREQUESTS.
 */
export async function listTags(deps: TagDeps, target: RepositoryTarget, n: string | undefined, last: string | undefined): Promise<TagPage> {
  const size = parsePageSize(n);
  const whole = size === undefined && (last === undefined || last === '');
  let page: TagPage;
  try {
    page = await upstreamTags(deps, target, size, last);
  } catch (e) {
    if (!isOciError(e) || e.code === 'NAME_UNKNOWN') throw e;
    const known = await deps.catalog.tagList(target);
    if (!known) throw e;
    return paginate(known, size, last);
  }
  if (whole && !page.next) await deps.catalog.putTagList(target, page.tags, deps.clock());
  return page;
}

/** One page from the upstream. */
async function upstreamTags(deps: TagDeps, target: RepositoryTarget, size: number | undefined, last: string | undefined): Promise<TagPage> {
  const query = new URLSearchParams();
  if (size !== undefined) query.set('n', String(size));
  if (last !== undefined && last !== '') query.set('last', last);
  const path = `/v2/${target.name}/tags/list${query.size > 0 ? `?${query}` : ''}`;
  const res = await selectUpstream(deps.upstreams, target.upstream).request('GET', path, target.name, { accept: 'application/json' });
  if (!res.ok) throw await upstreamError(res, target.upstream, new OciError('NAME_UNKNOWN', 'repository name not known to registry', { name: target.name }));
  const next = parseNextLink(res.headers.get('link'));
  let doc: { tags?: unknown };
  try {
    doc = JSON.parse(new TextDecoder().decode(await readCapped(res, MAX_LISTING_BYTES))) as { tags?: unknown };
  } catch (cause) {
    if (cause instanceof OciError) throw cause;
    throw new OciError('UPSTREAM_INVALID', 'upstream tag list is not valid JSON', undefined, { cause });
  }
  // distribution answers `"tags": null` for a repository without tags.
  const tags = doc.tags ?? [];
  if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
    throw new OciError('UPSTREAM_INVALID', 'upstream tag list is malformed');
  }
  if (next) return { tags: [...tags].sort(compareTags), next };
  // Cut here whatever the upstream did with `n` and `last`: distribution 2.x ignores both
  // and answers its whole list; cutting a page the upstream cut already changes nothing.
  return paginate(tags, size, last);
}

/**
 * The spec's lexical order for tags ("case-insensitive alphanumeric"), ties broken by code
 * unit so that it is a total order and `last` names exactly one place in it.
 */
export function compareTags(a: string, b: string): number {
  const [la, lb] = [a.toLowerCase(), b.toLowerCase()];
  if (la !== lb) return la < lb ? -1 : 1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A page cut locally: the tags after `last` in lexical order, at most `n` of them (all
 * without `n`), and the next page when more remain.
 */
export function paginate(tags: readonly string[], n: number | undefined, last: string | undefined): TagPage {
  const sorted = [...tags].sort(compareTags);
  const after = last === undefined || last === '' ? sorted : sorted.filter((t) => compareTags(t, last) > 0);
  if (n === undefined) return { tags: after };
  const page = after.slice(0, n);
  return after.length > n && page.length > 0 ? { tags: page, next: { n, last: page.at(-1)! } } : { tags: page };
}
