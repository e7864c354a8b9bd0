// Layer decompression by media type, the same code on Node and in workerd: gzip through
// the platform's DecompressionStream, zstd through fzstd (pure JS, streaming; Node 20's
// zlib and workerd's DecompressionStream have no zstd).
import { Decompress } from 'fzstd';
import { OciError } from './errors.ts';

export type Compression = 'gzip' | 'zstd' | 'none';

const LAYER_COMPRESSION: Record<string, Compression> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

/** How a layer of `mediaType` is compressed. Throws UNSUPPORTED for anything that is not a layer tar. */
export function compressionOf(mediaType: string): Compression {
  const compression = LAYER_COMPRESSION[mediaType];
  if (!compression) throw new OciError('UNSUPPORTED', 'not a layer media type that can be extracted', { mediaType, supported: Object.keys(LAYER_COMPRESSION) });
  return compression;
}

/** A zstd decoder as a TransformStream; fzstd is synchronous, so errors surface from `transform`. */
function zstdStream(): TransformStream<Uint8Array, Uint8Array> {
  let decoder: Decompress;
  return new TransformStream({
    start(controller) {
      decoder = new Decompress((chunk) => {
        if (chunk.length > 0) controller.enqueue(chunk);
      });
    },
    transform(chunk) {
      decoder.push(chunk);
    },
    flush() {
      decoder.push(new Uint8Array(0), true);
    },
  });
}

/** A stream that turns a layer blob into its uncompressed tar. */
export function decompressStream(compression: Compression): TransformStream<Uint8Array, Uint8Array> {
  switch (compression) {
    case 'gzip':
      return new DecompressionStream('gzip') as unknown as TransformStream<Uint8Array, Uint8Array>;
    case 'zstd':
      return zstdStream();
    case 'none':
      return new TransformStream();
  }
}
