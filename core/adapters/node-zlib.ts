// Node's own zlib for layer decompression (core/layer/decompress.ts NativeDecoders): gzip,
// several times faster than the pure-JS decoder, and it checks the gzip trailer. Not zstd:
// Node's `zlib.createZstdDecompress` (24.21) ends after the first frame of a stream of
// several, and zstd:chunked layers are many frames; fzstd decodes them all. Only the Node
// runtime wires this: workerd keeps the pure-JS decoders.
import * as zlib from 'node:zlib';
import { Duplex } from 'node:stream';
import type { NativeDecoders } from '../layer/decompress.ts';

/** Output pieces: the decoder writes at most this much before the reader takes it. */
const CHUNK_BYTES = 64 * 1024;

const webOf = (make: () => Duplex) => () => Duplex.toWeb(make()) as unknown as TransformStream<Uint8Array, Uint8Array>;

export const nodeDecoders: NativeDecoders = {
  gzip: webOf(() => zlib.createGunzip({ chunkSize: CHUNK_BYTES })),
};
