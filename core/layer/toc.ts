// The table of contents of an uncompressed layer tar (`layers/sha256/<diff-id>/toc.json`,
// a public contract): one entry per member, in archive order, with the byte offset of its
// data in `layer.tar`, so any file is one Range read away.
import { createHash, type Hash } from 'node:crypto';
import { TarParser, normalizeTarPath, type TarEntry, type TarEntryType } from './tar.ts';

export const TOC_VERSION = 1;

export interface TocEntry {
  /** Normalised member path (see normalizeTarPath); `.` is the layer root. */
  path: string;
  type: TarEntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  /** Byte offset of the member's data in layer.tar (for a file, the first content byte). */
  offset: number;
  /** sha256 of a regular file's content. */
  digest?: string;
  /** Symlink target as archived; hard link target as a normalised path. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Record<string, string>;
  /** On an OCI whiteout (`.wh.<name>`): the path it deletes from lower layers. */
  whiteout?: string;
  /** On an opaque-directory marker (`.wh..wh..opq`): the directory whose lower contents it hides. */
  opaque?: string;
}

export interface Toc {
  version: typeof TOC_VERSION;
  /** sha256 of layer.tar: the image config's rootfs.diff_ids entry. */
  diff_id: string;
  /** Bytes in layer.tar. */
  size: number;
  entries: TocEntry[];
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';

function tocEntryOf(entry: TarEntry): TocEntry {
  const path = normalizeTarPath(entry.name);
  const toc: TocEntry = { path, type: entry.type, mode: entry.mode, uid: entry.uid, gid: entry.gid, size: entry.size, mtime: entry.mtime, offset: entry.offset };
  if (entry.linkname !== undefined) toc.linkname = entry.type === 'hardlink' ? normalizeTarPath(entry.linkname) : entry.linkname;
  if (entry.devmajor !== undefined) (toc.devmajor = entry.devmajor), (toc.devminor = entry.devminor ?? 0);
  if (entry.xattrs) toc.xattrs = entry.xattrs;
  const slash = path.lastIndexOf('/');
  const dir = slash === -1 ? '' : path.slice(0, slash);
  const base = path.slice(slash + 1);
  if (base === OPAQUE_MARKER) toc.opaque = dir === '' ? '.' : dir;
  else if (base.startsWith(WHITEOUT_PREFIX)) toc.whiteout = `${dir === '' ? '' : `${dir}/`}${base.slice(WHITEOUT_PREFIX.length)}`;
  return toc;
}

/**
 * A pass-through stream that parses the tar flowing through it and reports each TOC entry
 * (with its content digest) once the member's data has passed. Errors the stream on a
 * malformed archive. Only one header and one file hash are held at a time.
 */
export function tocStream(onEntry: (entry: TocEntry) => void): TransformStream<Uint8Array, Uint8Array> & { entries(): number } {
  let current: TocEntry | undefined;
  let hash: Hash | undefined;
  let entries = 0;
  const parser = new TarParser({
    entry(e) {
      current = tocEntryOf(e);
      hash = e.type === 'file' ? createHash('sha256') : undefined;
    },
    data(chunk) {
      hash!.update(chunk);
    },
    entryEnd() {
      if (hash) current!.digest = `sha256:${hash.digest('hex')}`;
      entries++;
      onEntry(current!);
      current = undefined;
      hash = undefined;
    },
  });
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      parser.push(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      parser.end();
    },
  });
  return Object.assign(stream, { entries: () => entries });
}

/**
 * toc.json as a byte stream, written while the tar streams: `write` each entry, then
 * `finish` with the totals (or `fail`). The document is
 * `{"version":1,"diff_id":…,"entries":[…],"size":…}` with one entry per line.
 */
export function tocWriter(diffId: string): { readable: ReadableStream<Uint8Array>; write(entry: TocEntry): void; finish(size: number): void; fail(reason: unknown): void; digest(): string } {
  const encoder = new TextEncoder();
  const hash = createHash('sha256');
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let first = true;
  const readable = new ReadableStream<Uint8Array>({ start: (c) => void (controller = c) });
  const emit = (text: string) => {
    const bytes = encoder.encode(text);
    hash.update(bytes);
    controller.enqueue(bytes);
  };
  emit(`{"version":${TOC_VERSION},"diff_id":${JSON.stringify(diffId)},"entries":[`);
  let done = '';
  return {
    readable,
    write(entry) {
      emit(`${first ? '\n' : ',\n'}${JSON.stringify(entry)}`);
      first = false;
    },
    finish(size) {
      emit(`\n],"size":${size}}\n`);
      done = `sha256:${hash.digest('hex')}`;
      controller.close();
    },
    fail(reason) {
      controller.error(reason);
    },
    digest() {
      if (!done) throw new Error('the TOC is not finished');
      return done;
    },
  };
}

/** Parses toc.json (throws on anything that is not one). */
export function parseToc(text: string): Toc {
  const toc = JSON.parse(text) as Toc;
  if (toc?.version !== TOC_VERSION || typeof toc.diff_id !== 'string' || !Array.isArray(toc.entries) || typeof toc.size !== 'number') {
    throw new Error('not a pullthrough TOC (version 1)');
  }
  return toc;
}
