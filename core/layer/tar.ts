// A streaming tar reader: chunks in, entries and their data out, with the byte offset of
// every member's data in the archive. Nothing is buffered beyond one 512-byte header and
// the bodies of PAX / GNU long-name records (capped). Formats: v7, ustar (with prefix),
// GNU (long names and link names, base-256 numbers) and PAX (local and global records).

export const TAR_ENTRY_TYPES = ['file', 'hardlink', 'symlink', 'chardev', 'blockdev', 'dir', 'fifo'] as const;
export type TarEntryType = (typeof TAR_ENTRY_TYPES)[number];

export interface TarEntry {
  /** The member name as archived (PAX / GNU long names applied), not yet normalised. */
  name: string;
  type: TarEntryType;
  /** Permission and set-id bits (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of data that follow the header (0 for everything but regular files, usually). */
  size: number;
  /** Seconds since the epoch (fractional from PAX). */
  mtime: number;
  /** Target of a symlink or hard link. */
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes from PAX `SCHILY.xattr.*` records, base64 values. */
  xattrs?: Record<string, string>;
  /** Offset of the member's data (the byte after its header) in the archive. */
  offset: number;
}

/** A malformed or unsupported archive; the message says what and where. */
export class TarError extends Error {}

export interface TarHandlers {
  /** A member's header, before its data. */
  entry(entry: TarEntry): void;
  /** Part of the current member's data, in order; the chunk is only valid during the call. */
  data(chunk: Uint8Array): void;
  /** The current member's data is complete. */
  entryEnd(): void;
}

const BLOCK = 512;
/** PAX and GNU long-name records are read whole: cap them. */
const MAX_META_BYTES = 1024 * 1024;
const decoder = new TextDecoder();

const TYPE_FLAGS: Record<string, TarEntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'chardev',
  '4': 'blockdev',
  '5': 'dir',
  '6': 'fifo',
};

function cString(block: Uint8Array, start: number, length: number): string {
  const field = block.subarray(start, start + length);
  const end = field.indexOf(0);
  return decoder.decode(end === -1 ? field : field.subarray(0, end));
}

/** An octal ASCII number, or GNU base-256 when the high bit of the first byte is set. */
function number(block: Uint8Array, start: number, length: number, what: string, at: number): number {
  const field = block.subarray(start, start + length);
  if (field[0]! & 0x80) {
    if (field[0] === 0xff) throw new TarError(`negative ${what} in the header at byte ${at}`);
    let value = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) value = value * 256 + field[i]!;
    if (!Number.isSafeInteger(value)) throw new TarError(`${what} too large in the header at byte ${at}`);
    return value;
  }
  const text = decoder.decode(field).replace(/\0.*$/s, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new TarError(`${what} is not an octal number (${JSON.stringify(text)}) in the header at byte ${at}`);
  return parseInt(text, 8);
}

const XATTR_PREFIX = 'SCHILY.xattr.';

/** Bytes as a string of char codes 0-255 (what btoa encodes). */
function binaryString(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 8192) out += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return out;
}

/** PAX records: `<length> <key>=<value>\n`, lengths counting the whole record. */
function parsePax(bytes: Uint8Array, at: number): Map<string, string> {
  const records = new Map<string, string>();
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes[pos] === 0) break;
    const space = bytes.indexOf(0x20, pos);
    const length = space === -1 ? NaN : Number(decoder.decode(bytes.subarray(pos, space)));
    if (!Number.isSafeInteger(length) || length <= space - pos || pos + length > bytes.length || bytes[pos + length - 1] !== 0x0a) {
      throw new TarError(`malformed PAX record in the header at byte ${at}`);
    }
    const record = bytes.subarray(space + 1, pos + length - 1);
    const eq = record.indexOf(0x3d); // '='
    if (eq <= 0) throw new TarError(`malformed PAX record in the header at byte ${at}`);
    const key = decoder.decode(record.subarray(0, eq));
    // Extended attribute values are bytes (security.capability is binary): one char per byte.
    const value = key.startsWith(XATTR_PREFIX) ? binaryString(record.subarray(eq + 1)) : decoder.decode(record.subarray(eq + 1));
    records.set(key, value);
    pos += length;
  }
  return records;
}

type State =
  | { kind: 'header' }
  | { kind: 'data'; remaining: number; padding: number }
  | { kind: 'meta'; type: 'pax' | 'pax-global' | 'gnu-name' | 'gnu-link'; remaining: number; padding: number; chunks: Uint8Array[]; size: number }
  | { kind: 'skip'; remaining: number }
  | { kind: 'end' };

/** Feed it with `push`, then call `end`; handlers are called synchronously. Throws TarError. */
export class TarParser {
  readonly #handlers: TarHandlers;
  #state: State = { kind: 'header' };
  /** Bytes consumed so far. */
  #position = 0;
  /** A header split across chunks. */
  readonly #header = new Uint8Array(BLOCK);
  #headerFill = 0;
  #pax = new Map<string, string>();
  readonly #globalPax = new Map<string, string>();
  #longName: string | undefined;
  #longLink: string | undefined;
  #inEntry = false;

  constructor(handlers: TarHandlers) {
    this.#handlers = handlers;
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.#position;
  }

  push(chunk: Uint8Array): void {
    let pos = 0;
    while (pos < chunk.length) {
      const state = this.#state;
      const available = chunk.length - pos;
      switch (state.kind) {
        case 'end':
          // Anything after the end-of-archive marker (more zero blocks, padding) is ignored.
          this.#position += available;
          return;
        case 'header': {
          if (this.#headerFill === 0 && available >= BLOCK) {
            this.#onHeader(chunk.subarray(pos, pos + BLOCK));
            pos += BLOCK;
          } else {
            const take = Math.min(BLOCK - this.#headerFill, available);
            this.#header.set(chunk.subarray(pos, pos + take), this.#headerFill);
            this.#headerFill += take;
            pos += take;
            if (this.#headerFill === BLOCK) {
              this.#headerFill = 0;
              this.#onHeader(this.#header);
            }
          }
          break;
        }
        case 'data': {
          if (state.remaining > 0) {
            const take = Math.min(state.remaining, available);
            this.#handlers.data(chunk.subarray(pos, pos + take));
            state.remaining -= take;
            this.#position += take;
            pos += take;
            if (state.remaining > 0) break;
            this.#inEntry = false;
            this.#handlers.entryEnd();
          }
          const skip = Math.min(state.padding, chunk.length - pos);
          state.padding -= skip;
          this.#position += skip;
          pos += skip;
          if (state.padding === 0) this.#state = { kind: 'header' };
          break;
        }
        case 'meta': {
          if (state.remaining > 0) {
            const take = Math.min(state.remaining, available);
            state.chunks.push(chunk.slice(pos, pos + take));
            state.remaining -= take;
            this.#position += take;
            pos += take;
            if (state.remaining > 0) break;
          }
          const skip = Math.min(state.padding, chunk.length - pos);
          state.padding -= skip;
          this.#position += skip;
          pos += skip;
          if (state.padding === 0) this.#onMeta(state);
          break;
        }
        case 'skip': {
          const take = Math.min(state.remaining, available);
          state.remaining -= take;
          this.#position += take;
          pos += take;
          if (state.remaining === 0) this.#state = { kind: 'header' };
          break;
        }
      }
    }
  }

  /** The archive is complete; throws when it stopped inside a member or had no end marker. */
  end(): void {
    if (this.#state.kind === 'end') return;
    if (this.#state.kind === 'header' && this.#headerFill === 0 && !this.#inEntry && this.#pax.size === 0 && this.#longName === undefined) {
      // No end-of-archive blocks: accepted (as GNU tar does, with a warning), nothing is missing.
      return;
    }
    throw new TarError(`the archive is truncated at byte ${this.#position}`);
  }

  #onHeader(block: Uint8Array): void {
    const at = this.#position;
    this.#position += BLOCK;
    if (block.every((b) => b === 0)) {
      if (this.#pax.size > 0 || this.#longName !== undefined || this.#longLink !== undefined) {
        throw new TarError(`the archive ends after an extended header at byte ${at}`);
      }
      this.#state = { kind: 'end' };
      return;
    }
    const stored = number(block, 148, 8, 'checksum', at);
    let unsigned = 0;
    let signed = 0;
    for (let i = 0; i < BLOCK; i++) {
      const b = i >= 148 && i < 156 ? 0x20 : block[i]!;
      unsigned += b;
      signed += b > 127 ? b - 256 : b;
    }
    if (stored !== unsigned && stored !== signed) throw new TarError(`bad header checksum at byte ${at}`);

    const flag = String.fromCharCode(block[156]!);
    const size = number(block, 124, 12, 'size', at);
    const padding = (BLOCK - (size % BLOCK)) % BLOCK;
    const meta = flag === 'x' ? 'pax' : flag === 'g' ? 'pax-global' : flag === 'L' ? 'gnu-name' : flag === 'K' ? 'gnu-link' : undefined;
    if (meta) {
      if (size > MAX_META_BYTES) throw new TarError(`extended header of ${size} bytes at byte ${at} is over the ${MAX_META_BYTES}-byte limit`);
      this.#state = { kind: 'meta', type: meta, remaining: size, padding, chunks: [], size };
      if (size === 0) this.#onMeta(this.#state);
      return;
    }
    if (flag === 'V') {
      // A GNU volume label: not a member.
      this.#state = { kind: 'skip', remaining: size + padding };
      return;
    }
    const type = TYPE_FLAGS[flag];
    if (!type) {
      const what = flag === 'S' ? 'GNU sparse files are' : `entry type ${JSON.stringify(flag)} is`;
      throw new TarError(`${what} not supported (header at byte ${at})`);
    }

    const magic = decoder.decode(block.subarray(257, 263));
    const posix = magic === 'ustar\0';
    let name = cString(block, 0, 100);
    if (posix) {
      const prefix = cString(block, 345, 155);
      if (prefix) name = `${prefix}/${name}`;
    }
    const pax = new Map([...this.#globalPax, ...this.#pax]);
    if (pax.has('GNU.sparse.major') || pax.has('GNU.sparse.name') || pax.has('GNU.sparse.size')) {
      throw new TarError(`PAX sparse files are not supported (header at byte ${at})`);
    }
    const paxNumber = (key: string, fallback: number) => {
      const value = pax.get(key);
      if (value === undefined) return fallback;
      const n = Number(value);
      if (!Number.isFinite(n) || n < 0) throw new TarError(`PAX ${key} is not a number (${JSON.stringify(value)}) at byte ${at}`);
      return n;
    };
    const dataSize = paxNumber('size', size);
    if (!Number.isSafeInteger(dataSize)) throw new TarError(`PAX size is not an integer at byte ${at}`);
    const entry: TarEntry = {
      name: pax.get('path') ?? this.#longName ?? name,
      type,
      mode: number(block, 100, 8, 'mode', at) & 0o7777,
      uid: paxNumber('uid', number(block, 108, 8, 'uid', at)),
      gid: paxNumber('gid', number(block, 116, 8, 'gid', at)),
      size: type === 'file' ? dataSize : 0,
      mtime: paxNumber('mtime', number(block, 136, 12, 'mtime', at)),
      offset: this.#position,
    };
    if (type === 'symlink' || type === 'hardlink') entry.linkname = pax.get('linkpath') ?? this.#longLink ?? cString(block, 157, 100);
    if (type === 'chardev' || type === 'blockdev') {
      entry.devmajor = number(block, 329, 8, 'devmajor', at);
      entry.devminor = number(block, 337, 8, 'devminor', at);
    }
    const xattrs = [...pax].filter(([k]) => k.startsWith(XATTR_PREFIX));
    if (xattrs.length > 0) entry.xattrs = Object.fromEntries(xattrs.map(([k, v]) => [k.slice(XATTR_PREFIX.length), btoa(v)]));
    if (entry.name === '') throw new TarError(`a member has an empty name (header at byte ${at})`);
    this.#pax = new Map();
    this.#longName = undefined;
    this.#longLink = undefined;

    this.#handlers.entry(entry);
    // Data after a non-file header (a hard link with a size, say) is skipped, not served.
    const dataPadding = (BLOCK - (dataSize % BLOCK)) % BLOCK;
    if (type === 'file') {
      if (dataSize === 0) {
        this.#handlers.entryEnd();
        this.#state = { kind: 'header' };
      } else {
        this.#inEntry = true;
        this.#state = { kind: 'data', remaining: dataSize, padding: dataPadding };
      }
    } else {
      this.#handlers.entryEnd();
      this.#state = dataSize > 0 ? { kind: 'skip', remaining: dataSize + dataPadding } : { kind: 'header' };
    }
  }

  #onMeta(state: Extract<State, { kind: 'meta' }>): void {
    const bytes = new Uint8Array(state.size);
    let at = 0;
    for (const c of state.chunks) bytes.set(c, at), (at += c.length);
    const where = this.#position - state.size - ((BLOCK - (state.size % BLOCK)) % BLOCK);
    if (state.type === 'pax') for (const [k, v] of parsePax(bytes, where)) this.#pax.set(k, v);
    else if (state.type === 'pax-global') for (const [k, v] of parsePax(bytes, where)) this.#globalPax.set(k, v);
    else {
      const end = bytes.indexOf(0);
      const text = decoder.decode(end === -1 ? bytes : bytes.subarray(0, end));
      if (state.type === 'gnu-name') this.#longName = text;
      else this.#longLink = text;
    }
    this.#state = { kind: 'header' };
  }
}

/**
 * A member name in TOC form: no leading `./`, no empty or `.` components, no trailing
 * slash; `..` components and a leading `/` are kept, so that a consumer sees (and
 * refuses) them. The archive root is `.`.
 */
export function normalizeTarPath(name: string): string {
  const absolute = name.startsWith('/');
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  const path = parts.join('/');
  if (absolute) return `/${path}`;
  return path === '' ? '.' : path;
}

/** The ustar header of a regular file (mode 0644, owner 0, mtime 0), for archives we write. Names up to 100 bytes. */
export function tarFileHeader(name: string, size: number): Uint8Array {
  const encoded = new TextEncoder().encode(name);
  if (encoded.length > 100) throw new TarError(`${name}: the name is too long for a ustar header`);
  const block = new Uint8Array(BLOCK);
  const ascii = (text: string, at: number) => block.set(new TextEncoder().encode(text), at);
  const octal = (value: number, at: number, length: number) => ascii(`${value.toString(8).padStart(length - 1, '0')}\0`, at);
  block.set(encoded, 0);
  octal(0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(0, 136, 12);
  block.fill(0x20, 148, 156);
  ascii('0', 156);
  ascii('ustar\0', 257);
  ascii('00', 263);
  let sum = 0;
  for (const byte of block) sum += byte;
  ascii(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return block;
}

/** Zeros that pad a member of `size` bytes to its 512-byte block. */
export const tarPadding = (size: number): Uint8Array => new Uint8Array((BLOCK - (size % BLOCK)) % BLOCK);
/** The two zero blocks that end an archive. */
export const TAR_END = new Uint8Array(2 * BLOCK);
