import { OciError } from './errors.ts';

/** Repository name grammar from the OCI distribution spec. */
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME_RE = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG_RE = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** Whether `text` is a valid tag (the distribution spec's grammar). */
export const isTag = (text: string): boolean => TAG_RE.test(text);
const DIGEST_RE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;
const MAX_NAME_LENGTH = 255;

/** Encoded lengths of the algorithms we can verify. */
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface Digest {
  algorithm: DigestAlgorithm;
  hex: string;
  /** `algorithm:hex`, the canonical string. */
  value: string;
}

/** Parses a digest. Throws DIGEST_INVALID for anything malformed or of an unknown algorithm. */
export function parseDigest(value: string): Digest {
  const m = DIGEST_RE.exec(value);
  if (!m) throw new OciError('DIGEST_INVALID', 'provided digest is malformed', { digest: value });
  const algorithm = m[1]!;
  const hex = m[2]!;
  const length = DIGEST_HEX_LENGTH[algorithm];
  if (length === undefined) {
    throw new OciError('DIGEST_INVALID', 'digest algorithm is not supported', { digest: value, supported: Object.keys(DIGEST_HEX_LENGTH) });
  }
  if (hex.length !== length || !/^[0-9a-f]+$/.test(hex)) {
    throw new OciError('DIGEST_INVALID', `provided digest is not a valid ${algorithm} digest`, { digest: value });
  }
  return { algorithm: algorithm as DigestAlgorithm, hex, value };
}

export const isDigest = (reference: string): boolean => reference.includes(':');

/** Throws NAME_INVALID unless `name` is a valid repository name. */
export function assertName(name: string): void {
  if (name.length > MAX_NAME_LENGTH || !NAME_RE.test(name)) {
    throw new OciError('NAME_INVALID', 'invalid repository name', { name });
  }
}

/**
 * Splits a manifest reference into a tag or a digest. Throws MANIFEST_UNKNOWN for anything
 * that is neither: on the pull side no such manifest can exist (distribution answers the
 * same); TAG_INVALID is for pushes.
 */
export function parseReference(reference: string): { tag: string } | { digest: Digest } {
  if (isDigest(reference)) {
    try {
      return { digest: parseDigest(reference) };
    } catch (e) {
      throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { reference, reason: (e as Error).message });
    }
  }
  if (!TAG_RE.test(reference)) throw new OciError('MANIFEST_UNKNOWN', 'manifest unknown', { reference, reason: 'neither a valid tag nor a digest' });
  return { tag: reference };
}

/** A repository on a configured upstream. */
export interface RepositoryTarget {
  /** The upstream's host key, e.g. `docker.io`. */
  upstream: string;
  /** The repository name as the upstream knows it, e.g. `library/alpine`. */
  name: string;
}

/**
 * Picks the upstream for a request, in the DESIGN order: the `ns` query parameter, then a
 * first path segment equal to a configured host, then the default upstream. Only
 * configured hosts can come out of this; a name that merely looks like a host stays a
 * repository name on the default upstream.
 */
export function resolveTarget(
  pathName: string,
  ns: string | undefined,
  upstreams: ReadonlySet<string>,
  defaultUpstream: string,
): RepositoryTarget {
  let upstream = defaultUpstream;
  let name = pathName;
  if (ns !== undefined && ns !== '') {
    if (!upstreams.has(ns)) {
      throw new OciError('DENIED', 'upstream registry is not configured', { ns });
    }
    upstream = ns;
  } else {
    const slash = pathName.indexOf('/');
    const first = slash === -1 ? '' : pathName.slice(0, slash);
    if (first !== '' && upstreams.has(first)) {
      upstream = first;
      name = pathName.slice(slash + 1);
    }
  }
  assertName(name);
  if (upstream === 'docker.io' && !name.includes('/')) name = `library/${name}`;
  return { upstream, name };
}

/**
 * Splits an image reference as people write it (`alpine`, `ghcr.io/org/app:1.2`,
 * `docker.io/library/alpine@sha256:…`) into the repository path and the tag or digest
 * (`latest` when neither is given). The path still goes through resolveTarget.
 */
export function splitImageReference(image: string): { path: string; reference: string } {
  const at = image.indexOf('@');
  if (at !== -1) return { path: image.slice(0, at), reference: image.slice(at + 1) };
  const colon = image.lastIndexOf(':');
  if (colon > image.lastIndexOf('/')) return { path: image.slice(0, colon), reference: image.slice(colon + 1) };
  return { path: image, reference: 'latest' };
}
