/**
 * Export (`GET /api/export/<image>`, `pullthrough export`): a cached image as an OCI image
 * layout tar, the reverse of an import: `oci-layout`, every manifest, config and layer
 * under `blobs/<alg>/<hex>` byte for byte from the store, and `index.json` last, naming
 * the tag. For an index, every child (or the one of `platform`). Every blob must be
 * stored: a missing one is refused before a byte is sent (warm the image first), so the
 * archive is complete or not sent. Streamed member by member at the reader's pace.
 */
import type { ManifestDeps } from './manifests.ts';
import { getManifest } from './manifests.ts';
import { OciError } from '../oci/errors.ts';
import { MediaType, parseManifest, selectPlatform, type Platform } from '../oci/manifest.ts';
import { parseReference, type RepositoryTarget } from '../oci/reference.ts';
import { TAR_END, tarFileHeader, tarPadding } from '../layer/tar.ts';
import { streamOf } from '../streams.ts';

export interface ExportedImage {
  /** The digest `index.json` names: the reference's manifest (or the platform's child). */
  digest: string;
  /** Bytes of the whole tar. */
  size: number;
  body: ReadableStream<Uint8Array>;
}

type Member = { name: string; size: number } & ({ bytes: Uint8Array } | { key: string });

const memberName = (digest: string) => `blobs/${digest.replace(':', '/')}`;

export async function exportImage(deps: ManifestDeps, target: RepositoryTarget, reference: string, platform?: Platform): Promise<ExportedImage> {
  const members: Member[] = [];
  const added = new Set<string>();
  const addBytes = (digest: string, bytes: Uint8Array) => {
    if (added.has(digest)) return;
    added.add(digest);
    members.push({ name: memberName(digest), size: bytes.length, bytes });
  };
  const addBlob = async (digest: string, size: number) => {
    if (added.has(digest)) return;
    const row = await deps.catalog.blob(digest);
    const stored = row?.state === 'ready' ? await deps.store.stat(row.storageKey) : undefined;
    if (!row || stored?.size !== size) throw new OciError('BLOB_UNKNOWN', 'a blob of the image is not in the cache: warm the image first', { digest });
    added.add(digest);
    members.push({ name: memberName(digest), size, key: row.storageKey });
  };
  const image = async (digest: string) => {
    const m = await getManifest(deps, target, digest, 'GET');
    const parsed = parseManifest(m.bytes!, m.mediaType);
    if (parsed.kind !== 'image') throw new OciError('MANIFEST_INVALID', 'an index entry is not an image manifest', { digest });
    for (const d of [parsed.config, ...parsed.layers]) await addBlob(d.digest, d.size);
    addBytes(m.digest, m.bytes!);
    return m;
  };

  let top = await getManifest(deps, target, reference, 'GET');
  const parsed = parseManifest(top.bytes!, top.mediaType);
  if (parsed.kind === 'index') {
    if (platform) {
      const child = selectPlatform(parsed.manifests, platform);
      if (!child) throw new OciError('PLATFORM_UNKNOWN', 'the image index has no manifest for this platform', { platform });
      top = await image(child.digest);
    } else {
      for (const child of parsed.manifests) await image(child.digest);
      addBytes(top.digest, top.bytes!);
    }
  } else {
    await image(top.digest);
  }
  const ref = parseReference(reference);
  const index = {
    schemaVersion: 2,
    mediaType: MediaType.OciIndex,
    manifests: [{ mediaType: top.mediaType, digest: top.digest, size: top.size, ...('tag' in ref ? { annotations: { 'org.opencontainers.image.ref.name': ref.tag } } : {}) }],
  };
  const file = (name: string, value: unknown): Member => {
    const bytes = new TextEncoder().encode(JSON.stringify(value));
    return { name, size: bytes.length, bytes };
  };
  members.unshift(file('oci-layout', { imageLayoutVersion: '1.0.0' }));
  members.push(file('index.json', index));

  const size = members.reduce((n, m) => n + 512 + m.size + tarPadding(m.size).length, 0) + TAR_END.length;
  const store = deps.store;
  async function* pieces(): AsyncGenerator<Uint8Array> {
    for (const m of members) {
      yield tarFileHeader(m.name, m.size);
      if ('bytes' in m) yield m.bytes;
      else {
        const object = await store.get(m.key);
        if (!object || object.length !== m.size) throw new OciError('BLOB_UNKNOWN', 'a blob left the cache during the export', { member: m.name });
        for await (const chunk of object.body) yield chunk;
      }
      const padding = tarPadding(m.size);
      if (padding.length > 0) yield padding;
    }
    yield TAR_END;
  }
  return { digest: top.digest, size, body: streamOf(pieces()) };
}
