// Node's own zlib for layer decompression (core/layer/decompress.ts NativeDecoders), several
// times faster than the pure-JS decoders: gzip (which also checks the gzip trailer), and
// zstd on Node releases that have `zlib.createZstdDecompress`. Node's zstd decoder stops
// for good when one write holds a frame's end with more bytes after it (nodejs/node#64741;
// zstd:chunked layers are many frames), so its input is cut at frame ends first
// (core/layer/zstd-frames.ts), and then it decodes every frame. Only the Node runtime wires
// this: workerd keeps the pure-JS decoders. zlib holds its output back while the reader is
// slower, also within one write, so memory stays bounded by the chunk and stream buffers.
import * as zlib from 'node:zlib';
import { Duplex, Transform, type TransformCallback } from 'node:stream';
import type { NativeDecoders } from '../layer/decompress.ts';
import { ZstdFrameEnds } from '../layer/zstd-frames.ts';

/** Output pieces: the decoder writes at most this much before the reader takes it. */
const CHUNK_BYTES = 64 * 1024;

const webOf = (make: () => Duplex) => () => Duplex.toWeb(make()) as unknown as TransformStream<Uint8Array, Uint8Array>;

/** Passes a zstd stream on cut at its frame ends, each piece its own write; refuses a stream that ends inside a frame. */
class ZstdFrameCutter extends Transform {
  readonly #ends = new ZstdFrameEnds();

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    try {
      for (const piece of this.#ends.split(chunk)) this.push(piece);
      done();
    } catch (e) {
      done(e as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    done(this.#ends.atFrameEnd ? undefined : new Error('the zstd stream ends inside a frame'));
  }
}

const createZstdDecompress = (zlib as { createZstdDecompress?: (options?: zlib.ZlibOptions) => Transform }).createZstdDecompress;

/** The cutter piped into Node's zstd decoder, as one duplex: an error on either side ends both. */
function zstdDecoder(make: NonNullable<typeof createZstdDecompress>): Duplex {
  const cutter = new ZstdFrameCutter();
  const decoder = make({ chunkSize: CHUNK_BYTES });
  cutter.on('error', (e) => decoder.destroy(e));
  decoder.on('close', () => cutter.destroy());
  cutter.pipe(decoder);
  return Duplex.from({ writable: cutter, readable: decoder });
}

export const nodeDecoders: NativeDecoders = {
  gzip: webOf(() => zlib.createGunzip({ chunkSize: CHUNK_BYTES })),
  ...(createZstdDecompress ? { zstd: webOf(() => zstdDecoder(createZstdDecompress)) } : {}),
};
