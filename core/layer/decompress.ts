// Layer decompression by media type: natively where the runtime wires decoders in (Node's
// zlib for gzip, and for zstd where Node has it, its input cut at frame ends:
// core/adapters/node-zlib.ts; workerd's DecompressionStream for gzip: workers/cloudflare.ts),
// else gzip through fflate and zstd through fzstd (pure JS and streaming: workerd's
// DecompressionStream has no zstd). Node's own DecompressionStream is not used: it does not
// hold back its output when the reader is slower (a 1 GiB gzip layer into S3 grew the
// process to 700 MB); workerd's does, and stays within the isolate's memory
// (worker.workerd.test.ts extracts a 200 MB layer under 128 MB live).
//
// Decoding is pull-driven: compressed input is fed in small pieces only when the reader
// asks for more, so memory is bounded by piece size × the format's worst-case ratio
// (deflate ≈ 1032:1 on 16 KiB; zstd RLE blocks ≈ 32768:1 on 1 KiB), not by the layer.
// fflate's streaming gunzip does not check the gzip trailer (CRC32, size): a truncated
// gzip layer may end early here rather than error; the tar reader or the diff_id check
// refuses it, so nothing unverified is published either way.
import { Gunzip } from 'fflate';
import { Decompress as Unzstd } from 'fzstd';
import { OciError } from '../oci/errors.ts';

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

/** A malformed compressed stream (the decoder's own message, and the format). */
export class DecompressError extends Error {}

/**
 * Decoders a runtime has natively (Node's zlib: core/adapters/node-zlib.ts), as web
 * transform pairs; used instead of the pure-JS ones for the formats they cover. Piped
 * with backpressure, they read input only as the reader takes output.
 */
export type NativeDecoders = Partial<Record<Exclude<Compression, 'none'>, () => TransformStream<Uint8Array, Uint8Array>>>;

/** `source` through a native decoder, its errors (bad data) as DecompressError, the source cancelled with the result. */
function nativelyDecompressed(source: ReadableStream<Uint8Array>, compression: Exclude<Compression, 'none'>, make: () => TransformStream<Uint8Array, Uint8Array>, signal?: AbortSignal): ReadableStream<Uint8Array> {
  const decoder = make();
  // Cancelling the decoder's output errors its input, which ends the pipe by cancelling the source.
  const piped = source.pipeTo(decoder.writable).catch(() => {});
  const reader = decoder.readable.getReader();
  const stop = async (reason: unknown) => {
    await reader.cancel(reason).catch(() => {});
    await piped;
  };
  signal?.addEventListener('abort', () => void stop(signal.reason), { once: true });
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        if (signal?.aborted) {
          await stop(signal.reason);
          throw signal.reason;
        }
        let read;
        try {
          read = await reader.read();
        } catch (e) {
          if (signal?.aborted) throw signal.reason;
          throw new DecompressError(`invalid ${compression} data: ${(e as Error).message}`);
        }
        if (read.done) controller.close();
        else controller.enqueue(read.value);
      },
      cancel: (reason) => stop(reason),
    },
    { highWaterMark: 0 },
  );
}

interface PushDecoder {
  push(chunk: Uint8Array, final?: boolean): void;
}

const PIECE_BYTES: Record<Exclude<Compression, 'none'>, number> = { gzip: 16 * 1024, zstd: 1024 };

function decoderFor(compression: Exclude<Compression, 'none'>, emit: (data: Uint8Array) => void): PushDecoder {
  if (compression === 'gzip') return new Gunzip((data) => data.length > 0 && emit(data));
  return new Unzstd((data) => data.length > 0 && emit(data));
}

/**
 * The uncompressed bytes of `source`. Errors with DecompressError on malformed input.
 * Cancelling the result (or `signal`) cancels the source.
 */
export function decompressed(source: ReadableStream<Uint8Array>, compression: Compression, signal?: AbortSignal, native?: NativeDecoders): ReadableStream<Uint8Array> {
  if (compression === 'none') return signal ? source.pipeThrough(new TransformStream(), { signal }) : source;
  const make = native?.[compression];
  if (make) return nativelyDecompressed(source, compression, make, signal);
  const reader = source.getReader();
  const piece = PIECE_BYTES[compression];
  let out: Uint8Array[] = [];
  const decoder = decoderFor(compression, (data) => void out.push(data));
  let pending: Uint8Array | undefined;
  let finished = false;
  const onAbort = () => void reader.cancel(signal!.reason).catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  const feed = (chunk: Uint8Array, final: boolean) => {
    try {
      decoder.push(chunk, final);
    } catch (e) {
      throw new DecompressError(`invalid ${compression} data: ${(e as Error).message}`);
    }
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        // Feed pieces until some output exists (or the input ends).
        while (out.length === 0 && !finished) {
          signal?.throwIfAborted();
          if (!pending || pending.length === 0) {
            const { value, done } = await reader.read();
            if (done) {
              feed(new Uint8Array(0), true);
              finished = true;
              signal?.removeEventListener('abort', onAbort);
              break;
            }
            pending = value;
          }
          feed(pending.subarray(0, piece), false);
          pending = pending.subarray(piece);
        }
        const ready = out;
        out = [];
        for (const data of ready) controller.enqueue(data);
        if (finished && out.length === 0) controller.close();
      },
      async cancel(reason) {
        signal?.removeEventListener('abort', onAbort);
        await reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
