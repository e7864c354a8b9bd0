/**
 * Offline import (`POST /api/import`, `pullthrough import`): an OCI image layout (as a
 * tar, `skopeo copy … oci-archive:`) or a `docker save` / `docker-archive:` tarball,
 * streamed once. Every blob named by its digest (`blobs/sha256/<hex>`, `<hex>.tar`,
 * `<hex>.json`) is verified while it streams into the store under its final key, under
 * its row's lease as a transfer would hold it; small JSON members (manifests, configs,
 * index.json, manifest.json) are kept in memory (each at most 4 MiB, 64 MiB in all). At
 * the end the manifests are checked against their descriptors (every config and layer
 * present, sizes equal), and only then are manifests stored, blobs recorded ready and the
 * tags set for the repository given (`as`). Any failure (a truncated archive, a wrong
 * digest, a missing blob) deletes what this import wrote and records nothing; the error
 * names the member. A docker archive gets an OCI manifest made for it (its config and
 * layers byte for byte, so their digests are the archive's).
 */
import { createHash, type Hash } from 'node:crypto';
import type { Catalog, ManifestReference } from '../ports/catalog.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { Clock } from '../ports/clock.ts';
import { OciError, isOciError } from '../oci/errors.ts';
import { TarError, TarParser, normalizeTarPath, type TarEntry } from '../layer/tar.ts';
import { blobKey, manifestKey } from '../oci/keys.ts';
import { MediaType, parseManifest, type ParsedManifest } from '../oci/manifest.ts';
import { MAX_MANIFEST_BYTES } from '../oci/limits.ts';
import { parseDigest, type RepositoryTarget } from '../oci/reference.ts';
import { digestOf } from '../oci/digest.ts';

/** Small JSON members kept in memory, in all. */
const MAX_HELD_BYTES = 64 * 1024 * 1024;
const REF_NAME = 'org.opencontainers.image.ref.name';
/** What a manifest made for a docker archive says its parts are. */
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const OCI_LAYER = { tar: 'application/vnd.oci.image.layer.v1.tar', gzip: 'application/vnd.oci.image.layer.v1.tar+gzip', zstd: 'application/vnd.oci.image.layer.v1.tar+zstd' };

export interface ImportDeps {
  catalog: Catalog;
  store: BlobStore;
  clock: Clock;
  leaseMs: number;
  log: (entry: Record<string, unknown>) => void;
}

export interface ImportReport {
  format: 'oci-layout' | 'docker-archive';
  /** Tags set, `<upstream>/<name>:<tag>` → manifest digest. */
  tags: Array<{ tag: string; digest: string }>;
  manifests: string[];
  blobs: number;
  /** Bytes of blobs this import wrote (already stored ones are verified, not written again). */
  bytesWritten: number;
  bytesRead: number;
}

interface Seen {
  size: number;
  /** The first bytes (compression magic) of a streamed member. */
  magic: Uint8Array;
}

const invalid = (message: string, detail: Record<string, unknown>) => new OciError('REQUEST_INVALID', message, detail);

/** The digest a member's name gives, when it is named by one. */
function digestOfName(name: string): string | undefined {
  const oci = /^blobs\/(sha256|sha512)\/([0-9a-f]{64,128})$/.exec(name);
  if (oci) return `${oci[1]}:${oci[2]}`;
  const docker = /^([0-9a-f]{64})\.(tar|json)$/.exec(name);
  return docker ? `sha256:${docker[1]}` : undefined;
}

/** Imports one archive into the cache as `as` (a repository, and a tag unless the archive names its own). */
export async function importArchive(deps: ImportDeps, body: ReadableStream<Uint8Array>, as: { target: RepositoryTarget; tag?: string | undefined }): Promise<ImportReport> {
  const { catalog, store, clock } = deps;
  const owner = `import-${crypto.randomUUID()}`;
  const held = new Map<string, Uint8Array>(); // by member name, and by digest for digest-named ones
  let heldBytes = 0;
  const seen = new Map<string, Seen>();
  const claimed = new Map<string, number>(); // digest → size, leased to us, object written
  const written: string[] = [];
  let bytesRead = 0;
  let bytesWritten = 0;

  // The leases are renewed while the import runs.
  const renewal = setInterval(() => {
    for (const digest of claimed.keys()) void catalog.renew('blob', digest, owner, deps.leaseMs, clock()).catch(() => {});
  }, Math.max(1000, deps.leaseMs / 3));
  (renewal as { unref?: () => void }).unref?.();

  // The tar parser is synchronous: its events queue up per chunk and are handled in order.
  type Event = { kind: 'entry'; entry: TarEntry } | { kind: 'data'; chunk: Uint8Array } | { kind: 'end' };
  let events: Event[] = [];
  const parser = new TarParser({
    entry: (entry) => events.push({ kind: 'entry', entry }),
    data: (chunk) => events.push({ kind: 'data', chunk: chunk.slice() }),
    entryEnd: () => events.push({ kind: 'end' }),
  });

  // The member being read.
  let member:
    | { name: string; size: number; digest?: string | undefined; mode: 'undecided' | 'hold' | 'skip' | 'hash' | 'stream'; parts: Uint8Array[]; hash?: Hash; writer?: WritableStreamDefaultWriter<Uint8Array>; put?: Promise<unknown>; magic?: Uint8Array }
    | undefined;

  const fail = (e: unknown): never => {
    if (isOciError(e) && e.code === 'REQUEST_INVALID') throw e;
    const detail = isOciError(e) ? { ...e.detail, code: e.code } : { error: String((e as Error)?.message ?? e) };
    throw invalid(isOciError(e) && e.code === 'UPSTREAM_INVALID' ? `${member?.name ?? 'a member'}: ${e.message}` : `${member?.name ?? 'the archive'}: the member cannot be imported`, { entry: member?.name, ...detail });
  };

  /** Decides, on a digest-named member's first bytes, whether to keep it (small JSON) or stream it into the store. */
  const decide = async (first: Uint8Array | undefined) => {
    const m = member!;
    const digest = m.digest!;
    if (m.size <= MAX_MANIFEST_BYTES && (first === undefined || first[0] === 0x7b)) {
      m.mode = 'hold';
      m.hash = createHash(parseDigest(digest).algorithm);
      return;
    }
    m.magic = first?.slice(0, 4) ?? new Uint8Array();
    const row = await catalog.blob(digest);
    const present = row?.state === 'ready' && (await store.stat(row.storageKey))?.size === m.size;
    if (!present) {
      await catalog.recordBlob({ digest, upstream: as.target.upstream, name: as.target.name, size: m.size, storageKey: blobKey(parseDigest(digest)) }, clock());
      const claim = await catalog.claim('blob', digest, owner, deps.leaseMs, clock());
      if (claim.claimed) {
        const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
        m.writer = writable.getWriter();
        m.put = store.put(claim.claimed.storageKey, readable, { expected: { digest, size: m.size } });
        m.put.catch(() => {}); // awaited at the member's end
        m.mode = 'stream';
        claimed.set(digest, m.size);
        written.push(claim.claimed.storageKey);
        return;
      }
    }
    // Stored already, or being fetched by a transfer now: verified here, not written again.
    m.mode = 'hash';
    m.hash = createHash(parseDigest(digest).algorithm);
  };

  const handle = async (event: Event) => {
    if (event.kind === 'entry') {
      const name = normalizeTarPath(event.entry.name);
      const digest = event.entry.type === 'file' ? digestOfName(name) : undefined;
      const metadata = event.entry.type === 'file' && ['index.json', 'oci-layout', 'manifest.json', 'repositories'].includes(name);
      member = { name, size: event.entry.size, digest, mode: digest ? 'undecided' : metadata ? 'hold' : 'skip', parts: [] };
      if (metadata && event.entry.size > MAX_MANIFEST_BYTES) throw invalid(`${name} is larger than ${MAX_MANIFEST_BYTES} bytes`, { entry: name, size: event.entry.size });
      return;
    }
    const m = member!;
    if (event.kind === 'data') {
      if (m.mode === 'undecided') await decide(event.chunk);
      if (m.mode === 'hold') {
        heldBytes += event.chunk.byteLength;
        if (heldBytes > MAX_HELD_BYTES) throw invalid(`the archive's manifests and configs add up to more than ${MAX_HELD_BYTES} bytes`, { entry: m.name });
        m.parts.push(event.chunk);
      }
      if (m.mode === 'hold' || m.mode === 'hash') m.hash?.update(event.chunk);
      else if (m.mode === 'stream') {
        await m.writer!.write(event.chunk);
        bytesWritten += event.chunk.byteLength;
      }
      return;
    }
    // The member's end.
    if (m.mode === 'undecided') await decide(undefined);
    if (m.mode === 'skip') return;
    if (m.mode === 'stream') {
      await m.writer!.close().catch(() => {});
      await m.put; // the store verified it
    } else if (m.hash) {
      const actual = `${parseDigest(m.digest!).algorithm}:${m.hash.digest('hex')}`;
      if (actual !== m.digest) throw invalid(`${m.name}: content does not match its digest`, { entry: m.name, expected: m.digest, actual });
    }
    if (m.mode === 'hold') held.set(m.digest ?? m.name, Buffer.concat(m.parts));
    if (m.digest) seen.set(m.digest, { size: m.size, magic: m.magic ?? new Uint8Array() });
    member = undefined;
  };

  const drain = async () => {
    const batch = events;
    events = [];
    for (const event of batch) await handle(event);
  };

  try {
    try {
      for await (const chunk of body) {
        bytesRead += chunk.byteLength;
        parser.push(chunk);
        await drain();
      }
      parser.end();
      await drain();
    } catch (e) {
      if (e instanceof TarError) throw invalid(`the archive is not a complete tar: ${e.message}`, { entry: member?.name });
      fail(e);
    }
    const plan = held.has('index.json') ? ociPlan(held, seen, as) : held.has('manifest.json') ? dockerPlan(held, seen, as) : undefined;
    if (!plan) throw invalid('neither an OCI image layout (index.json) nor a docker save archive (manifest.json)', {});

    // Configs (kept in memory) are written like the streamed blobs.
    for (const digest of plan.heldBlobs) {
      const bytes = held.get(digest)!;
      const row = await catalog.blob(digest);
      if (row?.state === 'ready') continue;
      await catalog.recordBlob({ digest, upstream: as.target.upstream, name: as.target.name, size: bytes.length, storageKey: blobKey(parseDigest(digest)) }, clock());
      const claim = await catalog.claim('blob', digest, owner, deps.leaseMs, clock());
      if (!claim.claimed) continue;
      claimed.set(digest, bytes.length);
      written.push(claim.claimed.storageKey);
      await store.put(claim.claimed.storageKey, new Response(bytes).body!, { expected: { digest, size: bytes.length } });
      bytesWritten += bytes.length;
    }
    // Members no manifest refers to are not kept.
    for (const [digest] of claimed) {
      if (plan.blobs.has(digest)) continue;
      await store.delete(blobKey(parseDigest(digest)));
      await catalog.releaseClaim(digest, owner, clock());
      claimed.delete(digest);
    }
    // Manifests, children first, then the blobs ready, then the tags.
    const now = clock();
    for (const m of plan.manifests) {
      const key = manifestKey(parseDigest(m.digest));
      await store.put(key, new Response(m.bytes).body!, { expected: { digest: m.digest, size: m.bytes.length }, contentType: m.parsed.mediaType });
      written.push(key);
      await catalog.recordManifest({ digest: m.digest, mediaType: m.parsed.mediaType, size: m.bytes.length, storageKey: key }, referencesOf(m.parsed, as.target), now);
    }
    for (const [digest, size] of claimed) await catalog.blobStored(digest, owner, size, now);
    claimed.clear();
    for (const m of plan.manifests) await catalog.recordInRepository(as.target, m.digest, now);
    for (const t of plan.tags) await catalog.putTag(as.target, t.tag, t.digest, now);
    const report: ImportReport = {
      format: plan.format,
      tags: plan.tags.map((t) => ({ tag: `${as.target.upstream}/${as.target.name}:${t.tag}`, digest: t.digest })),
      manifests: plan.manifests.map((m) => m.digest),
      blobs: plan.blobs.size,
      bytesWritten,
      bytesRead,
    };
    deps.log({ msg: 'import', format: report.format, tags: report.tags.map((t) => t.tag), blobs: report.blobs, bytes: bytesWritten });
    return report;
  } catch (e) {
    // Nothing partial: what this import wrote goes, and the rows it leased go back to pending.
    await member?.writer?.abort(e).catch(() => {});
    for (const key of written) await store.delete(key).catch(() => {});
    for (const digest of claimed.keys()) await catalog.releaseClaim(digest, owner, clock()).catch(() => {});
    deps.log({ level: 'warn', msg: 'import failed', error: isOciError(e) ? `${e.code}: ${e.message}` : String(e) });
    throw e;
  } finally {
    clearInterval(renewal);
    await body.cancel().catch(() => {});
  }
}

interface Plan {
  format: ImportReport['format'];
  /** Children before their index. */
  manifests: Array<{ digest: string; bytes: Uint8Array; parsed: ParsedManifest }>;
  /** Every config and layer blob the manifests refer to. */
  blobs: Set<string>;
  /** Those that were kept in memory (configs), to write. */
  heldBlobs: string[];
  tags: Array<{ tag: string; digest: string }>;
}

function referencesOf(parsed: ParsedManifest, target: RepositoryTarget): ManifestReference[] {
  if (parsed.kind === 'index') return parsed.manifests.map((d, position) => ({ digest: d.digest, kind: 'manifest' as const, position }));
  return [{ d: parsed.config, kind: 'config' as const }, ...parsed.layers.map((d) => ({ d, kind: 'layer' as const }))].map(({ d, kind }, position) => ({
    digest: d.digest,
    kind,
    position,
    blob: { digest: d.digest, upstream: target.upstream, name: target.name, size: d.size, mediaType: d.mediaType, storageKey: blobKey(parseDigest(d.digest)) },
  }));
}

const json = (bytes: Uint8Array, what: string): unknown => {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw invalid(`${what} is not JSON`, { entry: what });
  }
};

/** What an OCI layout holds, checked: the manifests to store (children first), their blobs, the tags. */
function ociPlan(held: Map<string, Uint8Array>, seen: Map<string, Seen>, as: { tag?: string | undefined }): Plan {
  const index = json(held.get('index.json')!, 'index.json') as { manifests?: Array<{ digest: string; size: number; mediaType?: string; annotations?: Record<string, string> }> };
  const entries = index.manifests ?? [];
  if (entries.length === 0) throw invalid('index.json lists no manifest', { entry: 'index.json' });
  const refName = (e: (typeof entries)[number]) => {
    const name = e.annotations?.[REF_NAME];
    return name?.includes(':') ? name.slice(name.lastIndexOf(':') + 1) : name;
  };
  let tagged: Array<{ tag: string; entry: (typeof entries)[number] }>;
  if (as.tag) {
    const entry = entries.length === 1 ? entries[0] : entries.find((e) => refName(e) === as.tag);
    if (!entry) throw invalid('the layout has several images and none is named by the tag given', { tag: as.tag, names: entries.map(refName) });
    tagged = [{ tag: as.tag, entry }];
  } else {
    tagged = entries.flatMap((e) => (refName(e) ? [{ tag: refName(e)!, entry: e }] : []));
    if (tagged.length === 0) throw invalid('the layout names no tag (org.opencontainers.image.ref.name): give one with the repository', { entry: 'index.json' });
  }
  const plan: Plan = { format: 'oci-layout', manifests: [], blobs: new Set(), heldBlobs: [], tags: [] };
  const visited = new Set<string>();
  const visit = (digest: string, size: number, mediaType: string | undefined, from: string) => {
    if (visited.has(digest)) return;
    visited.add(digest);
    const bytes = held.get(digest);
    if (!bytes) throw invalid(`${from} refers to a manifest the archive does not have`, { entry: from, digest });
    if (bytes.length !== size) throw invalid(`${from}: the manifest's size is not its descriptor's`, { entry: `blobs/${digest.replace(':', '/')}`, expected: size, actual: bytes.length });
    let parsed: ParsedManifest;
    try {
      parsed = parseManifest(bytes, mediaType);
    } catch (e) {
      throw invalid(`blobs/${digest.replace(':', '/')}: not a manifest`, { entry: `blobs/${digest.replace(':', '/')}`, reason: (e as Error).message });
    }
    const name = `blobs/${digest.replace(':', '/')}`;
    if (parsed.kind === 'index') {
      for (const child of parsed.manifests) visit(child.digest, child.size, child.mediaType, name);
    } else {
      for (const d of [parsed.config, ...parsed.layers]) {
        const size = held.get(d.digest)?.length ?? seen.get(d.digest)?.size;
        if (size === undefined) throw invalid(`${name} refers to a blob the archive does not have`, { entry: name, digest: d.digest });
        if (size !== d.size) throw invalid(`blobs/${d.digest.replace(':', '/')}: its size is not the descriptor's`, { entry: `blobs/${d.digest.replace(':', '/')}`, expected: d.size, actual: size });
        plan.blobs.add(d.digest);
        if (held.has(d.digest)) plan.heldBlobs.push(d.digest);
      }
    }
    plan.manifests.push({ digest, bytes, parsed });
  };
  for (const { tag, entry } of tagged) {
    visit(entry.digest, entry.size, entry.mediaType, 'index.json');
    plan.tags.push({ tag, digest: entry.digest });
  }
  return plan;
}

/** What a docker archive holds: per image of manifest.json, an OCI manifest made of its config and layers. */
function dockerPlan(held: Map<string, Uint8Array>, seen: Map<string, Seen>, as: { tag?: string | undefined }): Plan {
  const images = json(held.get('manifest.json')!, 'manifest.json') as Array<{ Config?: string; RepoTags?: string[] | null; Layers?: string[] }>;
  if (!Array.isArray(images) || images.length === 0) throw invalid('manifest.json lists no image', { entry: 'manifest.json' });
  if (as.tag && images.length > 1) throw invalid('the archive has several images: give the repository without a tag, each is tagged as it says', { images: images.length });
  const plan: Plan = { format: 'docker-archive', manifests: [], blobs: new Set(), heldBlobs: [], tags: [] };
  for (const image of images) {
    const configDigest = digestOfName(image.Config ?? '');
    if (!configDigest) throw invalid('manifest.json names a config that is not named by its digest (a legacy docker save layout): save it again with skopeo or Docker 25+', { entry: image.Config });
    const config = held.get(configDigest);
    if (!config) throw invalid('manifest.json refers to a config the archive does not have', { entry: image.Config });
    const diffIds = ((json(config, image.Config!) as { rootfs?: { diff_ids?: string[] } }).rootfs?.diff_ids ?? []) as string[];
    const layers = (image.Layers ?? []).map((name) => {
      const digest = digestOfName(name);
      const member = digest ? seen.get(digest) : undefined;
      if (!digest || !member) throw invalid('manifest.json refers to a layer the archive does not have (or not by its digest)', { entry: name });
      const m = member.magic;
      const mediaType =
        m[0] === 0x1f && m[1] === 0x8b ? OCI_LAYER.gzip : m[0] === 0x28 && m[1] === 0xb5 && m[2] === 0x2f && m[3] === 0xfd ? OCI_LAYER.zstd : OCI_LAYER.tar;
      return { mediaType, digest, size: member.size };
    });
    if (diffIds.length !== layers.length) throw invalid(`${image.Config}: the config lists a different number of diff_ids than manifest.json has layers`, { entry: image.Config, diff_ids: diffIds.length, layers: layers.length });
    layers.forEach((l, i) => {
      if (l.mediaType === OCI_LAYER.tar && l.digest !== diffIds[i]) throw invalid(`layer ${i + 1} is not the tar its config's diff_id says`, { entry: image.Layers![i], diff_id: diffIds[i], digest: l.digest });
    });
    const manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: OCI_CONFIG, digest: configDigest, size: config.length }, layers };
    const bytes = new TextEncoder().encode(JSON.stringify(manifest));
    const digest = digestOf(bytes);
    plan.manifests.push({ digest, bytes, parsed: parseManifest(bytes, MediaType.OciManifest) });
    plan.blobs.add(configDigest);
    plan.heldBlobs.push(configDigest);
    for (const l of layers) plan.blobs.add(l.digest);
    const tags = as.tag ? [as.tag] : (image.RepoTags ?? []).map((t) => t.slice(t.lastIndexOf(':') + 1));
    if (tags.length === 0) throw invalid('the archive names no tag for an image: give one with the repository', { entry: 'manifest.json' });
    for (const tag of tags) plan.tags.push({ tag, digest });
  }
  return plan;
}

