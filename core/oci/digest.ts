import { createHash, type Hash } from 'node:crypto';
import { DigestMismatchError, SizeMismatchError } from './errors.ts';
import { parseDigest, type Digest } from './reference.ts';

export interface Expected {
  digest: string;
  /** Exact byte count, when a descriptor or Content-Length says so. */
  size?: number | undefined;
}

export const digestOf = (bytes: Uint8Array, algorithm: Digest['algorithm'] = 'sha256'): string =>
  `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;

/**
 * A pass-through stream that hashes and counts what flows through it and errors the
 * stream, instead of ending it, when the content is not what was expected. A consumer
 * that only commits on a clean end (a multipart upload, a rename) therefore never
 * commits unverified bytes. A size overrun fails at once, so a lying upstream cannot
 * make us read forever.
 */
export function verifyingStream(expected: Expected): TransformStream<Uint8Array, Uint8Array> & { bytes(): number } {
  const digest = parseDigest(expected.digest);
  const hash: Hash = createHash(digest.algorithm);
  let bytes = 0;
  const stream = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      bytes += chunk.byteLength;
      if (expected.size !== undefined && bytes > expected.size) {
        throw new SizeMismatchError(expected.size, bytes, digest.value);
      }
      hash.update(chunk);
      controller.enqueue(chunk);
    },
    flush() {
      if (expected.size !== undefined && bytes !== expected.size) {
        throw new SizeMismatchError(expected.size, bytes, digest.value);
      }
      const actual = `${digest.algorithm}:${hash.digest('hex')}`;
      if (actual !== digest.value) throw new DigestMismatchError(digest.value, actual);
    },
  });
  return Object.assign(stream, { bytes: () => bytes });
}
