import type { UpstreamRegistry } from '../adapters/http-upstream.ts';
import { readCapped, selectUpstream, upstreamError } from '../adapters/http-upstream.ts';
import { OciError } from '../oci/errors.ts';
import { MediaType, parseManifest } from '../oci/manifest.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { and, eq } from 'drizzle-orm';
import type { Database } from '../adapters/libsql.ts';
import { isOciError } from '../oci/errors.ts';
import { repositoryId } from './manifests.ts';
import { repositories } from '../../schema/repositories.ts';
import { tagLists } from '../../schema/tag-lists.ts';

export interface ListingDeps {
  upstreams: ReadonlyMap<string, UpstreamRegistry>;
  db: Database;
  now?: () => number;
}

/** Tag lists and referrer indexes are read whole: cap them like distribution caps bodies. */
export const MAX_LISTING_BYTES = 8 * 1024 * 1024;

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
export async function listTags(deps: ListingDeps, target: RepositoryTarget, n: string | undefined, last: string | undefined): Promise<TagPage> {
  const size = parsePageSize(n);
  const whole = size === undefined && (last === undefined || last === '');
  let page: TagPage;
  try {
    page = await upstreamTags(deps, target, size, last);
  } catch (e) {
    if (!isOciError(e) || e.code === 'NAME_UNKNOWN') throw e;
    const known = await rememberedTags(deps, target);
    if (!known) throw e;
    return paginate(known, size, last);
  }
  if (whole && !page.next) {
    const now = (deps.now ?? Date.now)();
    const id = await repositoryId(deps.db, target, now);
    const tags = JSON.stringify(page.tags);
    await deps.db.insert(tagLists).values({ repositoryId: id, tags, fetchedAt: now }).onConflictDoUpdate({ target: tagLists.repositoryId, set: { tags, fetchedAt: now } });
  }
  return page;
}

/** The last complete tag list remembered for the repository. */
async function rememberedTags(deps: ListingDeps, target: RepositoryTarget): Promise<string[] | undefined> {
  const [row] = await deps.db
    .select({ tags: tagLists.tags })
    .from(tagLists)
    .innerJoin(repositories, eq(repositories.id, tagLists.repositoryId))
    .where(and(eq(repositories.upstream, target.upstream), eq(repositories.name, target.name)));
  return row ? (JSON.parse(row.tags) as string[]) : undefined;
}

/** One page from the upstream. */
async function upstreamTags(deps: ListingDeps, target: RepositoryTarget, size: number | undefined, last: string | undefined): Promise<TagPage> {
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

export interface ReferrersAnswer {
  bytes: Uint8Array;
  /** The filters the upstream applied (`OCI-Filters-Applied`), if any. */
  filtersApplied?: string;
}

/**
 * The referrers index of a manifest, passed through from the upstream byte for byte.
 * An upstream without the referrers API answers 404, and so do we: clients then fall back
 * to the `sha256-<hex>` tag schema, which resolves through the manifest route.
 */
export async function listReferrers(deps: ListingDeps, target: RepositoryTarget, reference: string, artifactType: string | undefined): Promise<ReferrersAnswer> {
  const digest = parseDigest(reference);
  const query = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
  const res = await selectUpstream(deps.upstreams, target.upstream).request('GET', `/v2/${target.name}/referrers/${digest.value}${query}`, target.name, {
    accept: MediaType.OciIndex,
  });
  if (!res.ok) {
    throw await upstreamError(res, target.upstream, new OciError('NAME_UNKNOWN', 'the upstream has no referrers for this name', { name: target.name, digest: digest.value }));
  }
  const bytes = await readCapped(res, MAX_LISTING_BYTES);
  let parsed;
  try {
    parsed = parseManifest(bytes, MediaType.OciIndex);
  } catch (cause) {
    throw new OciError('UPSTREAM_INVALID', 'upstream referrers answer is not an OCI index', undefined, { cause });
  }
  if (parsed.kind !== 'index') throw new OciError('UPSTREAM_INVALID', 'upstream referrers answer is not an OCI index');
  const filtersApplied = res.headers.get('oci-filters-applied');
  return filtersApplied ? { bytes, filtersApplied } : { bytes };
}
