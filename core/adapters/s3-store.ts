import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCopyCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { verifyingStream } from '../oci/digest.ts';
import type { BlobStore, ByteRange, ListedObject, PutOptions, Staging, StoredObject } from '../ports/blob-store.ts';
import { StoreUnavailableError, errorCodeIn } from '../oci/errors.ts';
import { streamOf } from '../streams.ts';

/** Where staged writes keep their chunks: not a final key, not listed, swept. */
export const STAGING_PREFIX = '_staging/';

export interface S3StoreOptions {
  bucket: string;
  /** For messages only: where the bucket is (S3_ENDPOINT), undefined for AWS's default. */
  endpoint?: string | undefined;
  /** Multipart part size; S3's minimum is 5 MiB. */
  partSizeBytes: number;
  /** Parts uploaded at once. Memory per upload is about partSizeBytes × queueSize. */
  queueSize: number;
}

export interface S3Settings {
  endpoint?: string | undefined;
  region: string;
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  forcePathStyle: boolean;
}

/** An S3 client for any S3-compatible endpoint (R2, AWS, MinIO, Ceph RGW). */
export function createS3Client(s: S3Settings, extra: Partial<S3ClientConfig> = {}): S3Client {
  return new S3Client({
    region: s.region,
    endpoint: s.endpoint,
    forcePathStyle: s.forcePathStyle,
    credentials: s.accessKeyId && s.secretAccessKey ? { accessKeyId: s.accessKeyId, secretAccessKey: s.secretAccessKey } : undefined,
    // Checksum headers and aws-chunked trailers are not understood by every S3-compatible
    // server (R2, older Ceph); our own digest check is stronger anyway.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    ...extra,
  });
}

const isNotFound = (e: unknown): boolean => {
  const err = e as { name?: string; $metadata?: { httpStatusCode?: number } };
  return err.name === 'NotFound' || err.name === 'NoSuchKey' || err.$metadata?.httpStatusCode === 404;
};

/** Connection failures that mean nothing answers at the endpoint (not a blip mid-stream). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'CERT_HAS_EXPIRED', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'ERR_SSL_WRONG_VERSION_NUMBER']);

/**
 * The StoreUnavailableError an SDK error amounts to when it is the configuration that is
 * wrong (credentials, keys, bucket, endpoint, region), else undefined (one object's fault,
 * or a transient one).
 */
export function configurationFault(e: unknown, bucket: string, endpoint: string | undefined): StoreUnavailableError | undefined {
  const context = { bucket, endpoint: endpoint ?? 'the AWS default' };
  const fault = (variable: string, problem: string) => new StoreUnavailableError(variable, problem, context, e);
  switch ((e as { name?: string }).name) {
    case 'CredentialsProviderError':
      return fault('S3_ACCESS_KEY_ID', 'no credentials for the bucket: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY');
    case 'InvalidAccessKeyId':
      return fault('S3_ACCESS_KEY_ID', 'the S3 endpoint does not know this access key');
    case 'SignatureDoesNotMatch':
      return fault('S3_SECRET_ACCESS_KEY', 'the secret key does not match the access key (requests are refused as wrongly signed)');
    case 'NoSuchBucket':
      return fault('S3_BUCKET', 'no bucket of this name at the S3 endpoint');
    case 'AccessDenied':
    case 'Forbidden':
      return fault('S3_BUCKET', 'the credentials may not use this bucket');
    case 'AuthorizationHeaderMalformed':
    case 'PermanentRedirect':
      return fault('S3_REGION', 'the bucket is in another region than S3_REGION says');
  }
  const errno = errorCodeIn(e, UNREACHABLE);
  if (errno) return fault('S3_ENDPOINT', `nothing answers at the S3 endpoint (${errno})`);
  return undefined;
}

/**
 * Blob store on an S3 bucket. Writes are lib-storage multipart uploads fed by a
 * verifying stream: a mismatch errors the source before its end, so the upload is
 * aborted and never completed under the key.
 */
export class S3BlobStore implements BlobStore {
  readonly #client: S3Client;
  readonly #options: S3StoreOptions;

  constructor(client: S3Client, options: S3StoreOptions) {
    this.#client = client;
    this.#options = options;
  }

  /** The configuration fault `e` amounts to, or `e` itself. */
  #fault(e: unknown): unknown {
    return configurationFault(e, this.#options.bucket, this.#options.endpoint) ?? e;
  }

  async check(): Promise<void> {
    try {
      await this.#client.send(new ListObjectsV2Command({ Bucket: this.#options.bucket, MaxKeys: 1 }));
    } catch (e) {
      throw this.#fault(e);
    }
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const head = await this.#client.send(new HeadObjectCommand({ Bucket: this.#options.bucket, Key: key }));
      return { size: head.ContentLength ?? 0 };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.#fault(e);
    }
  }

  async get(key: string, range?: ByteRange): Promise<StoredObject | undefined> {
    try {
      const res = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#options.bucket, Key: key, Range: range ? `bytes=${range.start}-${range.end}` : undefined }),
      );
      if (!res.Body) return undefined;
      return { body: res.Body.transformToWebStream() as ReadableStream<Uint8Array>, length: res.ContentLength ?? 0 };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw this.#fault(e);
    }
  }

  async put(key: string, body: ReadableStream<Uint8Array>, options: PutOptions = {}): Promise<{ size: number }> {
    // We hold the key's lease, so any multipart upload still open for it belongs to a
    // writer that crashed: abort it rather than leave its parts billed forever.
    await this.abortIncompleteUploads(key).catch((e) => Promise.reject(this.#fault(e)));
    // One pass-through hop: the verifier counts what it hashes; without one, just count.
    const verifier = options.expected ? verifyingStream(options.expected) : undefined;
    let unverifiedBytes = 0;
    const counted = body.pipeThrough(
      verifier ??
        new TransformStream<Uint8Array, Uint8Array>({
          transform(chunk, controller) {
            unverifiedBytes += chunk.byteLength;
            controller.enqueue(chunk);
          },
        }),
    );
    const upload = new Upload({
      client: this.#client,
      params: { Bucket: this.#options.bucket, Key: key, Body: counted, ContentType: options.contentType },
      partSize: this.#options.partSizeBytes,
      queueSize: this.#options.queueSize,
      leavePartsOnError: false,
    });
    try {
      await upload.done();
    } catch (e) {
      // lib-storage has already aborted the multipart upload; stop reading the source.
      await counted.cancel(e).catch(() => {});
      throw this.#fault(e);
    }
    return { size: verifier ? verifier.bytes() : unverifiedBytes };
  }

  /** Aborts every open multipart upload for exactly `key`. Returns how many there were. */
  async abortIncompleteUploads(key: string): Promise<number> {
    let aborted = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.#client.send(
        new ListMultipartUploadsCommand({ Bucket: this.#options.bucket, Prefix: key, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
      for (const u of page.Uploads ?? []) {
        if (u.Key !== key || !u.UploadId) continue;
        await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#options.bucket, Key: key, UploadId: u.UploadId }));
        aborted++;
      }
      if (!page.IsTruncated) return aborted;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    let token: string | undefined;
    do {
      const page = await this.#client
        .send(new ListObjectsV2Command({ Bucket: this.#options.bucket, Prefix: prefix, ContinuationToken: token }))
        .catch((e) => Promise.reject(this.#fault(e)));
      for (const o of page.Contents ?? []) {
        if (o.Key !== undefined && !o.Key.startsWith(STAGING_PREFIX)) yield { key: o.Key, size: o.Size ?? 0, modifiedAt: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: key }));
  }

  staging(key: string): Staging {
    return new S3Staging(this, this.#client, this.#options, key);
  }

  /** For the staging: the fault an SDK error amounts to. */
  fault(e: unknown): unknown {
    return this.#fault(e);
  }

  async presign(key: string, ttlSeconds: number, options: { contentType?: string } = {}): Promise<string | undefined> {
    const command = new GetObjectCommand({ Bucket: this.#options.bucket, Key: key, ResponseContentType: options.contentType });
    return getSignedUrl(this.#client, command, { expiresIn: ttlSeconds }).catch((e) => Promise.reject(this.#fault(e)));
  }
}

interface Chunk {
  offset: number;
  size: number;
}

const chunkKey = (prefix: string, offset: number) => `${prefix}${String(offset).padStart(15, '0')}`;

/**
 * A staged write as chunk objects (`_staging/<key>/<offset>`, one per part size), each
 * readable by every process and isolate as soon as it lands. As each chunk lands it is
 * also copied server-side (UploadPartCopy: no byte goes through us again) into a multipart
 * upload for the final key, which the commit completes: nothing is visible under the key
 * before, and the commit costs one request however large the blob. A blob that fits in
 * one chunk is put under its key directly on commit. Parts are at least 5 MiB, which S3
 * requires of every part but the last.
 *
 * Memory: the chunk filling plus `queueSize` uploading (uploads run in parallel; `readable`
 * moves over the chunks landed from 0 without a gap).
 *
 * After a crash the chunks from 0 without a gap are the durable offset; the next writer
 * reads them back to hash them again (a GET of what is staged, inside the bucket's
 * region), cheaper than fetching them again from the upstream, and copies them into a
 * new multipart upload (the crashed writer's is aborted: we hold the key's lease).
 */
class S3Staging implements Staging {
  readonly immediate = false;
  readonly #store: S3BlobStore;
  readonly #client: S3Client;
  readonly #options: S3StoreOptions;
  readonly #key: string;
  readonly #prefix: string;
  /** Chunks known to have landed, in order from 0 without a gap. */
  #chunks: Chunk[] = [];
  /** Writer: chunks whose upload landed out of order, by offset. */
  #early = new Map<number, Chunk>();
  #buffer: Uint8Array[] = [];
  #buffered = 0;
  #uploads = new Set<Promise<void>>();
  #failure: unknown;
  #readable = 0;
  #next = 0;
  /** The multipart upload the landed chunks are copied into, and its parts so far. */
  #upload: Promise<string> | undefined;
  #copies: Array<Promise<{ PartNumber: number; ETag: string | undefined }>> = [];
  /** Server-side copies at most 8 at once (a resumed writer copies every staged chunk at open). */
  readonly #copySlots = new Slots(8);

  constructor(store: S3BlobStore, client: S3Client, options: S3StoreOptions, key: string) {
    this.#store = store;
    this.#client = client;
    this.#options = options;
    this.#key = key;
    this.#prefix = `${STAGING_PREFIX}${key}/`;
  }

  get readable(): number {
    return this.#readable;
  }

  get #bucket(): string {
    return this.#options.bucket;
  }

  #end(): number {
    const last = this.#chunks.at(-1);
    return last ? last.offset + last.size : 0;
  }

  /** Extends the known chunks with those that landed since (one HEAD each, and one that finds none). */
  async length(): Promise<number> {
    for (;;) {
      const offset = this.#end();
      const head = await this.#client.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: chunkKey(this.#prefix, offset) })).catch((e) => (isNotFound(e) ? undefined : Promise.reject(this.#store.fault(e))));
      if (!head || !head.ContentLength) return offset;
      this.#chunks.push({ offset, size: head.ContentLength });
    }
  }

  async read(start: number, end: number): Promise<ReadableStream<Uint8Array> | undefined> {
    if (end > this.#end()) await this.length();
    if (end <= start) return new ReadableStream({ start: (c) => c.close() });
    const parts = this.#chunks.filter((c) => c.offset < end && c.offset + c.size > start);
    const client = this.#client;
    const bucket = this.#bucket;
    const prefix = this.#prefix;
    const get = async (key: string, from: number, to: number) => {
      const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${from}-${to}` })).catch((e) => (isNotFound(e) ? undefined : Promise.reject(this.#store.fault(e))));
      return res?.Body?.transformToWebStream() as ReadableStream<Uint8Array> | undefined;
    };
    // Chunks are removed once composed: then the published object has the bytes.
    const first = parts[0];
    if (!first || first.offset > start || parts.at(-1)!.offset + parts.at(-1)!.size < end) return get(this.#key, start, end - 1);
    const open = async (c: Chunk) => {
      const from = Math.max(start, c.offset) - c.offset;
      const to = Math.min(end, c.offset + c.size) - c.offset - 1;
      return (await get(chunkKey(prefix, c.offset), from, to)) ?? (await get(this.#key, c.offset + from, c.offset + to));
    };
    // The first chunk tells whether the staging is still there; the rest follow in order.
    const head = await open(first);
    if (!head) return undefined;
    async function* pieces(): AsyncGenerator<Uint8Array> {
      for (const [i, c] of parts.entries()) {
        const body = i === 0 ? head! : await open(c);
        if (!body) throw new Error(`staged chunk ${chunkKey(prefix, c.offset)} went away while being read`);
        for await (const piece of body) yield piece;
      }
    }
    return streamOf(pieces());
  }

  async open(): Promise<number> {
    const found: Chunk[] = [];
    for await (const o of this.#listChunks()) found.push(o);
    found.sort((a, b) => a.offset - b.offset);
    this.#chunks = [];
    for (const c of found) {
      if (c.offset === this.#end() && c.size > 0) this.#chunks.push(c);
    }
    // Chunks after a gap (a crash between two uploads) are of no use.
    const stray = found.filter((c) => !this.#chunks.includes(c));
    await this.#delete(stray.map((c) => chunkKey(this.#prefix, c.offset)));
    // A crashed writer's multipart upload: we hold the key's lease, so it is nobody's now.
    await this.#store.abortIncompleteUploads(this.#key).catch((e) => Promise.reject(this.#store.fault(e)));
    this.#readable = this.#next = this.#end();
    for (const [i, c] of this.#chunks.entries()) this.#copy(i, c);
    return this.#readable;
  }

  async *#listChunks(): AsyncIterable<Chunk> {
    let token: string | undefined;
    do {
      const page = await this.#client
        .send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: this.#prefix, ContinuationToken: token }))
        .catch((e) => Promise.reject(this.#store.fault(e)));
      for (const o of page.Contents ?? []) {
        const offset = Number(o.Key?.slice(this.#prefix.length));
        if (Number.isSafeInteger(offset)) yield { offset, size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async append(bytes: Uint8Array): Promise<void> {
    if (this.#failure) throw this.#failure;
    this.#buffer.push(bytes);
    this.#buffered += bytes.byteLength;
    while (this.#buffered >= this.#options.partSizeBytes) await this.#flush(this.#options.partSizeBytes);
  }

  /** Uploads the first `size` buffered bytes as the next chunk, waiting while `queueSize` uploads run. */
  async #flush(size: number): Promise<void> {
    const all = concat(this.#buffer, this.#buffered);
    const body = all.subarray(0, size);
    const rest = all.subarray(size);
    this.#buffer = rest.byteLength ? [rest.slice()] : [];
    this.#buffered = rest.byteLength;
    const chunk = { offset: this.#next, size };
    this.#next += size;
    const upload = (async () => {
      try {
        await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: chunkKey(this.#prefix, chunk.offset), Body: body, ContentLength: size }));
        this.#landed(chunk);
      } catch (e) {
        this.#failure ??= this.#store.fault(e);
      }
    })();
    this.#uploads.add(upload);
    void upload.then(() => this.#uploads.delete(upload));
    while (this.#uploads.size >= Math.max(1, this.#options.queueSize) && !this.#failure) await Promise.race(this.#uploads);
    if (this.#failure) throw this.#failure;
  }

  /** A chunk's upload landed: `readable` moves over every chunk from it without a gap, each copied into the upload. */
  #landed(chunk: Chunk): void {
    this.#early.set(chunk.offset, chunk);
    for (let next = this.#early.get(this.#end()); next; next = this.#early.get(this.#end())) {
      this.#early.delete(next.offset);
      this.#chunks.push(next);
      this.#copy(this.#chunks.length - 1, next);
    }
    this.#readable = this.#end();
  }

  /** Copies chunk number `index` into the final key's multipart upload as part `index + 1`. */
  #copy(index: number, chunk: Chunk): void {
    this.#upload ??= this.#client.send(new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: this.#key, ContentType: 'application/octet-stream' })).then((r) => r.UploadId!);
    const copy = this.#upload.then(async (UploadId) => {
      const source = `${this.#bucket}/${encodeKey(chunkKey(this.#prefix, chunk.offset))}`;
      await this.#copySlots.acquire();
      try {
        const res = await this.#client.send(new UploadPartCopyCommand({ Bucket: this.#bucket, Key: this.#key, UploadId, PartNumber: index + 1, CopySource: source }));
        return { PartNumber: index + 1, ETag: res.CopyPartResult?.ETag };
      } finally {
        this.#copySlots.release();
      }
    });
    copy.catch(() => {});
    this.#copies[index] = copy;
  }

  async #drain(): Promise<void> {
    while (this.#uploads.size > 0) await Promise.all(this.#uploads);
    if (this.#failure) throw this.#failure;
  }

  /** Aborts the multipart upload, if one was started. */
  async #abort(): Promise<void> {
    const upload = this.#upload;
    this.#upload = undefined;
    this.#copies = [];
    const UploadId = await upload?.catch(() => undefined);
    if (UploadId) await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#bucket, Key: this.#key, UploadId }));
  }

  async truncate(length: number): Promise<void> {
    await this.#drain();
    if (length > this.#readable || !(length === 0 || this.#chunks.some((c) => c.offset + c.size === length))) {
      throw new Error(`cannot truncate staging of ${this.#readable} bytes to ${length}`);
    }
    const dropped = this.#chunks.filter((c) => c.offset >= length);
    this.#chunks = this.#chunks.filter((c) => c.offset < length);
    this.#buffer = [];
    this.#buffered = 0;
    this.#readable = this.#next = length;
    await this.#abort().catch((e) => Promise.reject(this.#store.fault(e)));
    await this.#delete(dropped.map((c) => chunkKey(this.#prefix, c.offset)));
    for (const [i, c] of this.#chunks.entries()) this.#copy(i, c);
  }

  async commit(contentType?: string): Promise<void> {
    const bucket = this.#bucket;
    const key = this.#key;
    try {
      if (this.#chunks.length === 0 && this.#uploads.size === 0 && this.#buffered < this.#options.partSizeBytes) {
        // The whole blob is in the buffer: one put under the key.
        await this.#abort();
        await this.#client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: concat(this.#buffer, this.#buffered), ContentLength: this.#buffered, ContentType: contentType }));
      } else {
        if (this.#buffered > 0) await this.#flush(this.#buffered);
        await this.#drain();
        const UploadId = await this.#upload!;
        const parts = await Promise.all(this.#copies);
        await this.#client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
        this.#upload = undefined;
      }
    } catch (e) {
      await this.#abort().catch(() => {});
      throw this.#store.fault(e);
    }
    this.#buffer = [];
    this.#buffered = 0;
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#copies = [];
    await this.#delete(chunks.map((c) => chunkKey(this.#prefix, c.offset))).catch(() => {});
  }

  async discard(): Promise<void> {
    while (this.#uploads.size > 0) await Promise.allSettled(this.#uploads);
    await this.#abort().catch(() => {});
    const keys: string[] = [];
    for await (const c of this.#listChunks()) keys.push(chunkKey(this.#prefix, c.offset));
    await this.#delete(keys);
    this.#chunks = [];
    this.#buffer = [];
    this.#buffered = 0;
  }

  async close(): Promise<void> {}

  /** One DeleteObject each (DeleteObjects wants a Content-MD5 some S3 servers check and the SDK no longer sends). */
  async #delete(keys: string[]): Promise<void> {
    const queue = [...keys];
    const worker = async () => {
      for (let key = queue.shift(); key !== undefined; key = queue.shift()) await this.#client.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    };
    await Promise.all(Array.from({ length: 4 }, worker));
  }
}

/** At most `n` holders at once. */
class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async acquire(): Promise<void> {
    if (this.#free > 0) return void this.#free--;
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }
  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

/** A copy source names the key URL-encoded, slashes kept. */
const encodeKey = (key: string) => key.split('/').map(encodeURIComponent).join('/');

function concat(pieces: Uint8Array[], total: number): Uint8Array {
  if (pieces.length === 1) return pieces[0]!;
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of pieces) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}
