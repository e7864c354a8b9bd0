import { OciError } from './errors.ts';

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

/** Every manifest type we serve, in the order we prefer to ask upstreams for them. */
export const MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.OciIndex,
  MediaType.OciManifest,
  MediaType.DockerManifestList,
  MediaType.DockerManifest,
];

/** Manifests are read whole, so they are capped before reading (as distribution does). */
/** The platform served to clients that cannot read an index, and planned by default (as distribution does). */
export const DEFAULT_PLATFORM = { os: 'linux', architecture: 'amd64' } as const;

export interface Platform {
  os: string;
  architecture: string;
  variant?: string | undefined;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform | undefined;
  annotations?: Record<string, string> | undefined;
}

export type ParsedManifest =
  | { kind: 'index'; mediaType: string; manifests: Descriptor[] }
  | { kind: 'image'; mediaType: string; config: Descriptor; layers: Descriptor[] };

function asDescriptor(value: unknown, where: string): Descriptor {
  const d = value as Partial<Descriptor> | null;
  if (!d || typeof d !== 'object' || typeof d.digest !== 'string' || typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw new OciError('MANIFEST_INVALID', 'manifest has an invalid descriptor', { where });
  }
  return {
    mediaType: typeof d.mediaType === 'string' ? d.mediaType : '',
    digest: d.digest,
    size: d.size,
    platform: d.platform,
    annotations: d.annotations,
  };
}

/**
 * Parses manifest bytes. The media type comes from the document when it has one, else
 * from the Content-Type it was served with. Throws MANIFEST_INVALID.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined): ParsedManifest {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes)) as Record<string, unknown>;
  } catch (cause) {
    throw new OciError('MANIFEST_INVALID', 'manifest is not valid JSON', undefined, { cause });
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) {
    throw new OciError('MANIFEST_INVALID', 'manifest is not a JSON object');
  }
  const mediaType = typeof doc.mediaType === 'string' ? doc.mediaType : (contentType ?? '').split(';')[0]!.trim();
  if (Array.isArray(doc.manifests)) {
    return { kind: 'index', mediaType: mediaType || MediaType.OciIndex, manifests: doc.manifests.map((m, i) => asDescriptor(m, `manifests[${i}]`)) };
  }
  if (doc.config !== undefined && Array.isArray(doc.layers)) {
    return {
      kind: 'image',
      mediaType: mediaType || MediaType.OciManifest,
      config: asDescriptor(doc.config, 'config'),
      layers: doc.layers.map((l, i) => asDescriptor(l, `layers[${i}]`)),
    };
  }
  if (doc.schemaVersion === 1) {
    throw new OciError('UNSUPPORTED', 'Docker schema 1 manifests are not supported', { mediaType });
  }
  throw new OciError('MANIFEST_INVALID', 'manifest is neither an image manifest nor an index', { mediaType });
}

/**
 * Media types a client accepts, from its Accept headers (several headers or one
 * comma-separated list). An empty list means "anything", as a missing Accept does.
 */
export function parseAccept(headers: readonly string[]): string[] {
  const types: string[] = [];
  for (const header of headers) {
    for (const part of header.split(',')) {
      const [type, ...params] = part.split(';').map((s) => s.trim());
      if (!type) continue;
      if (params.some((p) => /^q=0(\.0*)?$/.test(p))) continue;
      types.push(type.toLowerCase());
    }
  }
  return types;
}

/** Whether a manifest of `mediaType` may be sent to a client that accepts `accepted`. */
export function accepts(accepted: readonly string[], mediaType: string): boolean {
  if (accepted.length === 0) return true;
  return accepted.some((a) => a === '*/*' || a === mediaType || (a === 'application/*' && mediaType.startsWith('application/')));
}

/**
 * The index entry for a platform: exact os/architecture, and the variant when one is
 * asked for (arm64 entries without a variant count as v8).
 */
export function selectPlatform(manifests: readonly Descriptor[], want: Platform): Descriptor | undefined {
  const variantOf = (p: Platform) => p.variant ?? (p.architecture === 'arm64' ? 'v8' : undefined);
  return manifests.find((m) => {
    const p = m.platform;
    if (!p || p.os !== want.os || p.architecture !== want.architecture) return false;
    return want.variant === undefined || variantOf(p) === variantOf(want);
  });
}

/** `linux/amd64`, `linux/arm64/v8`. Throws PLATFORM_INVALID. */
export function parsePlatform(text: string): Platform {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => !/^[a-z0-9_.-]+$/i.test(p))) {
    throw new OciError('PLATFORM_INVALID', 'platform must be os/architecture[/variant]', { platform: text });
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}
