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
  /**
   * Where the same bytes are on this host, when the store keeps objects in files (the
   * filesystem store): a runtime that can send a file from its descriptor does so and
   * cancels `body`, which opens nothing until it is read.
   */
  file?: LocalFile;
}

/** A byte range of a local file: `end` inclusive, as in ByteRange. */
export interface LocalFile {
  path: string;
  start: number;
  end: number;
}

export interface ListedObject {
  key: string;
  size: number;
  /** When it was written, in epoch milliseconds. */
  modifiedAt: number;
}

/** Something a store left behind that a GC run removes (core/cache/gc.ts). */
export interface Leftover {
  /** `temporary` (a write's scratch file), `staging` (a staged write, a chunk, an announcement), `upload` (an S3 multipart upload), `spool`, `orphan` (an object under a final key no row serves: core/cache/gc.ts). */
  kind: 'temporary' | 'staging' | 'upload' | 'spool' | 'orphan';
  /** Where it is, relative to the store (a path, a key, `<key>#<upload id>`). */
  key: string;
  bytes: number;
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
   * The driver's temporaries last written before `before` (epoch ms): yielded, and removed
   * unless `dryRun`. Never an object under a final key.
   */
  leftovers(before: number, dryRun: boolean): AsyncIterable<Leftover>;
  /**
   * One cheap request that proves the store can be used as configured (Node runs it at
   * start-up). Throws StoreUnavailableError naming the variable at fault.
   */
  check(): Promise<void>;
  /** A short-lived URL a client can GET directly, or undefined when the backend has none. */
  presign(key: string, ttlSeconds: number, options?: { contentType?: string }): Promise<string | undefined>;
  /**
   * The staging area of `key`: the bytes of a write in progress, durable in the store and
   * readable by every process and isolate that shares it, never visible under `key` until
   * `commit`. Only the holder of the key's lease writes to it; anyone may read it.
   */
  staging(key: string, options?: StagingOptions): Staging;
}

export interface StagingOptions {
  /**
   * The writer keeps every byte it appends readable locally (Node's spool) and gives
   * bytes `[start, end)` back on request. With it a store may write the bytes once, into
   * the final object's upload, and make them readable to other processes only once one
   * of them asks to follow (`follow`): S3 then writes no chunk objects at all while
   * nobody elsewhere reads the blob in flight.
   */
  replay?: ((start: number, end: number) => AsyncIterable<Uint8Array>) | undefined;
}

/**
 * A blob being written in order, from byte 0 (see core/cache/transfer.ts). What has been
 * staged survives a crash of the writer, so a later writer can verify it again and
 * resume from its end instead of from 0.
 */
export interface Staging {
  /**
   * True when bytes can be read back as soon as `append` resolves (a local file); false
   * when they become readable a chunk at a time (`readable` says how far).
   */
  readonly immediate: boolean;
  /** Bytes readable now by anyone, as the store says (a writer that crashed included). */
  length(): Promise<number>;
  /** Bytes this writer has made readable so far (after `open`, `append`, `truncate`). */
  readonly readable: number;
  /** Bytes `[start, end)`, which must be readable; undefined when the staging is gone (committed or discarded). */
  read(start: number, end: number): Promise<ReadableStream<Uint8Array> | undefined>;
  /** Writer: takes over what is staged and returns its length (what `append` continues from). */
  open(): Promise<number>;
  /** Writer: appends bytes at the end. */
  append(bytes: Uint8Array): Promise<void>;
  /** Writer: drops everything after `length`, which must be at most `readable` (0: start again). */
  truncate(length: number): Promise<void>;
  /** Writer: publishes the staged bytes (which the caller has verified) under the key and removes the staging. */
  commit(contentType?: string): Promise<void>;
  /** Writer: removes what is staged. */
  discard(): Promise<void>;
  /**
   * Reader elsewhere: asks the writer to make its bytes readable in the store as they
   * come (a writer with `replay` may otherwise keep them to itself until the commit).
   * `close` withdraws the request.
   */
  follow(): Promise<void>;
  /** Closes what this handle opened (files, a request to follow); what is staged stays. The handle stays usable: what it needs again is opened again. */
  close(): Promise<void>;
}
