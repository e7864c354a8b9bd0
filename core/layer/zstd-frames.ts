// Where the frames of a zstd stream end, read from their headers alone (RFC 8878 §3.1):
// a frame header gives its own length, every block header the length of its block, a
// flag whether a checksum follows the last block; a skippable frame gives its length.
// Nothing is decoded. Node's zstd decoder (24.21; nodejs/node#64741) stops for good when
// one write holds a frame's end and more bytes after it, and decodes every frame when no
// write does: core/adapters/node-zlib.ts cuts the input at frame ends with this.

const ZSTD_MAGIC = 0xfd2fb528;
const SKIPPABLE_MAGIC = 0x184d2a50;
const SKIPPABLE_MASK = 0xfffffff0;

/** What the bytes being read are. */
type Field = 'magic' | 'descriptor' | 'block header' | 'skippable size' | 'skip';

/** Cuts a zstd stream into pieces none of which holds a frame's end before its last byte. */
export class ZstdFrameEnds {
  #field: Field = 'magic';
  /** Bytes still to read of the field. */
  #need = 4;
  /** The field's bytes so far (fields are at most 4 bytes; skipped bytes are not kept). */
  readonly #bytes = new Uint8Array(4);
  #have = 0;
  /** After the bytes skipped now: a block header (more blocks), the checksum, or the frame's end. */
  #then: 'block header' | 'checksum' | 'end' = 'end';
  #checksum = false;

  /** Whether the bytes so far end at a frame's end (or are none): the only place a stream may end. */
  get atFrameEnd(): boolean {
    return this.#field === 'magic' && this.#have === 0;
  }

  /** `chunk` cut after each frame end it holds; throws on bytes that are not zstd frames. */
  split(chunk: Uint8Array): Uint8Array[] {
    const pieces: Uint8Array[] = [];
    let start = 0;
    let at = 0;
    while (at < chunk.length) {
      const n = Math.min(this.#need, chunk.length - at);
      if (this.#field !== 'skip') this.#bytes.set(chunk.subarray(at, at + n), this.#have);
      this.#have += n;
      this.#need -= n;
      at += n;
      if (this.#need === 0 && this.#next()) {
        pieces.push(chunk.subarray(start, at));
        start = at;
      }
    }
    if (start < chunk.length) pieces.push(chunk.subarray(start));
    return pieces;
  }

  /** The field just read is complete: on to the next; true when a frame ended with it. */
  #next(): boolean {
    const b = this.#bytes;
    const value = (b[0]! | (b[1]! << 8) | (b[2]! << 16) | (b[3]! << 24)) >>> 0;
    this.#have = 0;
    switch (this.#field) {
      case 'magic':
        if (value === ZSTD_MAGIC) return this.#read('descriptor', 1);
        if ((value & SKIPPABLE_MASK) === SKIPPABLE_MAGIC) return this.#read('skippable size', 4);
        throw new Error(`not a zstd frame (magic 0x${value.toString(16).padStart(8, '0')})`);
      case 'skippable size':
        return this.#skip(value, 'end');
      case 'descriptor': {
        const d = b[0]!;
        if (d & 0x08) throw new Error('a zstd frame header with its reserved bit set');
        const single = (d >> 5) & 1;
        this.#checksum = ((d >> 2) & 1) === 1;
        const window = single ? 0 : 1;
        const dictionary = [0, 1, 2, 4][d & 3]!;
        const contentSize = [single, 2, 4, 8][d >> 6]!;
        return this.#skip(window + dictionary + contentSize, 'block header');
      }
      case 'block header': {
        const header = b[0]! | (b[1]! << 8) | (b[2]! << 16);
        const last = (header & 1) === 1;
        const type = (header >> 1) & 3;
        if (type === 3) throw new Error('a zstd block of the reserved type');
        // An RLE block holds the one byte it repeats; raw and compressed blocks their size.
        return this.#skip(type === 1 ? 1 : header >>> 3, last ? (this.#checksum ? 'checksum' : 'end') : 'block header');
      }
      case 'skip':
        if (this.#then === 'block header') return this.#read('block header', 3);
        if (this.#then === 'checksum') return this.#skip(4, 'end');
        return this.#read('magic', 4, true);
    }
  }

  #read(field: Field, bytes: number, ended = false): boolean {
    this.#field = field;
    this.#need = bytes;
    return ended;
  }

  /** Skips `bytes` (none: at once), then goes on to `then`. */
  #skip(bytes: number, then: 'block header' | 'checksum' | 'end'): boolean {
    this.#field = 'skip';
    this.#then = then;
    this.#need = bytes;
    return bytes === 0 ? this.#next() : false;
  }
}
