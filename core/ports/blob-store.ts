import type { Expected } from '../oci/digest.ts';

/** Inclusive byte range, already resolved against the object's size. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface StoredObject {
  body: ReadableStream<Uint8Array>;
  /** Bytes in `body`. */
  length: number;
}

export interface ListedObject {
  key: string;
  size: number;
  /** When it was written, in epoch milliseconds. */
  modifiedAt: number;
}

export interface PutOptions {
  /** When given, the content is verified while it streams and committed only if it matches. */
  expected?: Expected | undefined;
  contentType?: string | undefined;
}

/**
 * Content-addressed object storage, one implementation per backend (S3, filesystem).
 * Keys are the public bucket layout (`blobs/sha256/<hex>`, ...). An object is visible
 * under its key only once `put` has fully written and verified it.
 */
export interface BlobStore {
  /** Size of the object, or undefined when there is none. Throws only on backend failure. */
  stat(key: string): Promise<{ size: number } | undefined>;
  /** The object's bytes (or a range of them), or undefined when there is none. */
  get(key: string, range?: ByteRange): Promise<StoredObject | undefined>;
  /**
   * Streams `body` under `key`. Rejects with DigestMismatchError / SizeMismatchError (and
   * leaves nothing under `key`) when `expected` does not match; rejects with the backend
   * error when a write fails. The caller must be the only writer of `key` (it holds the
   * blob's lease), which lets a driver clean up what a crashed writer left behind.
   */
  put(key: string, body: ReadableStream<Uint8Array>, options?: PutOptions): Promise<{ size: number }>;
  /**
   * Every object whose key starts with `prefix`, in key order, a page at a time (what
   * retention sweeps with). Temporary data of a driver is not listed.
   */
  list(prefix: string): AsyncIterable<ListedObject>;
  /** Removes the object; a missing object is not an error. */
  delete(key: string): Promise<void>;
  /**
   * One cheap request that proves the store can be used as configured (Node runs it at
   * start-up). Throws StoreUnavailableError naming the variable at fault.
   */
  check(): Promise<void>;
  /** A short-lived URL a client can GET directly, or undefined when the backend has none. */
  presign(key: string, ttlSeconds: number, options?: { contentType?: string }): Promise<string | undefined>;
}
