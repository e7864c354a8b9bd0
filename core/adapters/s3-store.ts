import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  UploadPartCopyCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListPartsCommand,
  ListObjectsV2Command,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { verifyingStream } from '../oci/digest.ts';
import type { BlobStore, ByteRange, Leftover, ListedObject, PutOptions, Staging, StagingOptions, StoredObject } from '../ports/blob-store.ts';
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
    for await (const u of this.#uploads(key)) {
      if (u.Key !== key) continue;
      await this.#client.send(new AbortMultipartUploadCommand({ Bucket: this.#options.bucket, Key: key, UploadId: u.UploadId }));
      aborted++;
    }
    return aborted;
  }

  /** The open multipart uploads under `prefix` (all of them without one), a page at a time. */
  async *#uploads(prefix?: string): AsyncGenerator<{ Key: string; UploadId: string; Initiated: number }> {
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (;;) {
      const page = await this.#client.send(
        new ListMultipartUploadsCommand({ Bucket: this.#options.bucket, Prefix: prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
      );
      for (const u of page.Uploads ?? []) if (u.Key && u.UploadId) yield { Key: u.Key, UploadId: u.UploadId, Initiated: u.Initiated?.getTime() ?? 0 };
      if (!page.IsTruncated) return;
      keyMarker = page.NextKeyMarker;
      uploadIdMarker = page.NextUploadIdMarker;
    }
  }

  /** Every object under `prefix`, staging included, a page at a time. */
  async *#objects(prefix: string): AsyncGenerator<ListedObject> {
    let token: string | undefined;
    do {
      const page = await this.#client
        .send(new ListObjectsV2Command({ Bucket: this.#options.bucket, Prefix: prefix, ContinuationToken: token }))
        .catch((e) => Promise.reject(this.#fault(e)));
      for (const o of page.Contents ?? []) if (o.Key !== undefined) yield { key: o.Key, size: o.Size ?? 0, modifiedAt: o.LastModified?.getTime() ?? 0 };
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async *leftovers(before: number, dryRun: boolean): AsyncIterable<Leftover> {
    const bucket = this.#options.bucket;
    // Chunk objects and follower announcements under _staging/.
    for await (const o of this.#objects(STAGING_PREFIX)) {
      if (o.modifiedAt >= before) continue;
      if (!dryRun) await this.#client.send(new DeleteObjectCommand({ Bucket: bucket, Key: o.key }));
      yield { kind: 'staging', key: o.key, bytes: o.size };
    }
    // Multipart uploads started before: what their parts hold is what an abort frees.
    for await (const u of this.#uploads()) {
      if (u.Initiated >= before) continue;
      let bytes = 0;
      let partMarker: string | undefined;
      for (;;) {
        const parts = await this.#client.send(new ListPartsCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId, PartNumberMarker: partMarker }));
        for (const p of parts.Parts ?? []) bytes += p.Size ?? 0;
        if (!parts.IsTruncated) break;
        partMarker = parts.NextPartNumberMarker;
      }
      if (!dryRun) await this.#client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
      yield { kind: 'upload', key: `${u.Key}#${u.UploadId}`, bytes };
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    for await (const o of this.#objects(prefix)) if (!o.key.startsWith(STAGING_PREFIX)) yield o;
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: key }));
  }

  staging(key: string, options: StagingOptions = {}): Staging {
    return new S3Staging(this, this.#client, this.#options, key, options);
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

/** A chunk or part of the writer: its bytes, and its number in the multipart upload less one. */
interface Piece extends Chunk {
  index: number;
}

const chunkKey = (prefix: string, offset: number) => `${prefix}${String(offset).padStart(15, '0')}`;

/** Followers announce themselves with one empty object each under the staging prefix. */
const FOLLOWER = 'follower-';

/**
 * A staged write into a multipart upload for the final key: nothing is visible under the
 * key before the commit, which costs one request however large the blob. A blob that fits
 * in one part is put under its key directly on commit. Parts are at least 5 MiB, which S3
 * requires of every part but the last.
 *
 * Readable elsewhere while it runs through chunk objects (`_staging/<key>/<offset>`, one
 * per part), each readable by every process and isolate as soon as it lands and copied
 * server-side (UploadPartCopy: no byte goes through us again) into the upload. Chunks
 * cost the bucket a second write of every byte, so a writer that keeps its bytes locally
 * (`replay`: Node's spool, which serves the readers of its own process) uploads its parts
 * directly and writes chunks only once a reader elsewhere announces itself (`follow`: an
 * empty `_staging/<key>/follower-<id>`, looked for once per part): then the parts
 * uploaded so far are written again as chunks from the replay (`backfill`), and the
 * rest go through chunks. A Worker (no spool) always writes chunks: its own readers in
 * other requests read them.
 *
 * Memory: the part filling plus `queueSize` uploading (uploads run in parallel; `readable`
 * moves over the chunks landed from 0 without a gap), plus one part being backfilled.
 *
 * After a crash the chunks from 0 without a gap are the durable offset; the next writer
 * reads them back to hash them again (a GET of what is staged, inside the bucket's
 * region), cheaper than fetching them again from the upstream, and copies them into a
 * new multipart upload (the crashed writer's is aborted: we hold the key's lease). Parts
 * uploaded directly cannot be read back before the upload completes, so they cannot be
 * verified again: what they held is resumed from the crashed process's spool instead,
 * when it is on this host (core/cache/transfer.ts), else fetched again.
 */
class S3Staging implements Staging {
  readonly immediate = false;
  readonly #store: S3BlobStore;
  readonly #client: S3Client;
  readonly #options: S3StoreOptions;
  readonly #key: string;
  readonly #prefix: string;
  readonly #replay: StagingOptions['replay'];
  /** Chunks known to have landed, in order from 0 without a gap. */
  #chunks: Chunk[] = [];
  /** Writer: chunks whose upload landed out of order, by offset, and whether to copy them into the upload. */
  #early = new Map<number, { piece: Piece; copy: boolean }>();
  #buffer: Uint8Array[] = [];
  #buffered = 0;
  #uploads = new Set<Promise<void>>();
  #failure: unknown;
  #readable = 0;
  #next = 0;
  /** Writer: parts (and chunks) cut so far. */
  #count = 0;
  /** Writer: parts go straight into the upload (a replay, and nobody elsewhere follows yet). */
  #direct: boolean;
  /** Writer: parts uploaded directly that have no chunk yet. */
  #unchunked: Piece[] = [];
  #followCheck: Promise<void> | undefined;
  #committing = false;
  /** This handle committed the object: reads go to it, not to chunks. */
  #published = false;
  /** Follower: the announcement this handle put. */
  #announcement: string | undefined;
  /** The multipart upload for the final key, and its parts so far (by index). */
  #upload: Promise<string> | undefined;
  #parts: Array<Promise<{ PartNumber: number; ETag: string | undefined }>> = [];
  /** Server-side copies at most 8 at once (a resumed writer copies every staged chunk at open). */
  readonly #copySlots = new Slots(8);

  constructor(store: S3BlobStore, client: S3Client, options: S3StoreOptions, key: string, staging: StagingOptions) {
    this.#store = store;
    this.#client = client;
    this.#options = options;
    this.#key = key;
    this.#prefix = `${STAGING_PREFIX}${key}/`;
    this.#replay = staging.replay;
    this.#direct = staging.replay !== undefined;
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
      // Reads of one handle run at once (a Worker's clients of one transfer): another may
      // have added this chunk while we asked; a chunk listed twice would repeat its bytes.
      if (offset !== this.#end()) continue;
      if (!head || !head.ContentLength) return offset;
      this.#chunks.push({ offset, size: head.ContentLength });
    }
  }

  async read(start: number, end: number): Promise<ReadableStream<Uint8Array> | undefined> {
    if (end <= start) return new ReadableStream({ start: (c) => c.close() });
    // Committed by this handle: the published object has every byte (its chunks are going).
    if (this.#published) return this.#get(this.#key, start, end - 1);
    if (end > this.#end()) await this.length();
    const parts = this.#chunks.filter((c) => c.offset < end && c.offset + c.size > start);
    const prefix = this.#prefix;
    // Chunks are removed once composed, and the last part is never one: then the published object has the bytes.
    const first = parts[0];
    if (!first || first.offset > start || parts.at(-1)!.offset + parts.at(-1)!.size < end) return this.#get(this.#key, start, end - 1);
    const open = async (c: Chunk) => {
      const from = Math.max(start, c.offset) - c.offset;
      const to = Math.min(end, c.offset + c.size) - c.offset - 1;
      return (await this.#get(chunkKey(prefix, c.offset), from, to)) ?? (await this.#get(this.#key, c.offset + from, c.offset + to));
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

  /** Bytes `from`-`to` (inclusive) of an object; undefined when it is not there. */
  async #get(key: string, from: number, to: number): Promise<ReadableStream<Uint8Array> | undefined> {
    const res = await this.#client.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key, Range: `bytes=${from}-${to}` })).catch((e) => (isNotFound(e) ? undefined : Promise.reject(this.#store.fault(e))));
    // A reader counts on exactly the bytes it asked for: an answer of another length (a
    // range ignored, an object shorter than staged) would shift every byte after it.
    if (res && res.ContentLength !== to - from + 1) {
      await (res.Body as { transformToWebStream?: () => ReadableStream } | undefined)?.transformToWebStream?.().cancel().catch(() => {});
      throw new Error(`the store answered ${res.ContentLength} bytes for the ${to - from + 1} of bytes ${from}-${to} of ${key}`);
    }
    return res?.Body?.transformToWebStream() as ReadableStream<Uint8Array> | undefined;
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
    this.#restart();
    return this.#readable;
  }

  /** Starts the upload over from the chunks kept: each copied into a new one. */
  #restart(): void {
    this.#readable = this.#next = this.#end();
    this.#count = this.#chunks.length;
    this.#unchunked = [];
    for (const [index, c] of this.#chunks.entries()) this.#copy({ ...c, index });
  }

  async *#listChunks(): AsyncIterable<Chunk> {
    for await (const o of this.#listUnder(this.#prefix)) {
      const offset = Number(o.key.slice(this.#prefix.length));
      if (Number.isSafeInteger(offset)) yield { offset, size: o.size };
    }
  }

  async *#listUnder(prefix: string, maxKeys?: number): AsyncIterable<{ key: string; size: number }> {
    let token: string | undefined;
    do {
      const page = await this.#client
        .send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: prefix, ContinuationToken: token, MaxKeys: maxKeys }))
        .catch((e) => Promise.reject(this.#store.fault(e)));
      for (const o of page.Contents ?? []) if (o.Key !== undefined) yield { key: o.Key, size: o.Size ?? 0 };
      token = page.IsTruncated && maxKeys === undefined ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async append(bytes: Uint8Array): Promise<void> {
    if (this.#failure) throw this.#failure;
    this.#buffer.push(bytes);
    this.#buffered += bytes.byteLength;
    while (this.#buffered >= this.#options.partSizeBytes) await this.#flush(this.#options.partSizeBytes);
  }

  /** Uploads the first `size` buffered bytes as the next part (or chunk), waiting while `queueSize` uploads run. */
  async #flush(size: number): Promise<void> {
    const all = concat(this.#buffer, this.#buffered);
    const body = all.subarray(0, size);
    const rest = all.subarray(size);
    this.#buffer = rest.byteLength ? [rest.slice()] : [];
    this.#buffered = rest.byteLength;
    const piece = { offset: this.#next, size, index: this.#count++ };
    this.#next += size;
    // The last part goes straight into the upload: readers elsewhere read it from the published object.
    const direct = this.#direct || this.#committing;
    this.#track(direct ? this.#uploadPart(piece, body) : this.#putChunk(piece, body, true));
    if (direct && !this.#committing) this.#lookForFollowers();
    while (this.#uploads.size >= Math.max(1, this.#options.queueSize) && !this.#failure) await Promise.race(this.#uploads);
    if (this.#failure) throw this.#failure;
  }

  /** Runs a write among the uploads `#drain` waits for; its failure fails the staging. */
  #track(write: Promise<void>): void {
    const upload = write.catch((e) => {
      this.#failure ??= this.#store.fault(e);
    });
    this.#uploads.add(upload);
    void upload.then(() => this.#uploads.delete(upload));
  }

  #createUpload(): Promise<string> {
    this.#upload ??= this.#client.send(new CreateMultipartUploadCommand({ Bucket: this.#bucket, Key: this.#key, ContentType: 'application/octet-stream' })).then((r) => r.UploadId!);
    return this.#upload;
  }

  /** Uploads a part straight into the upload (no chunk: nobody elsewhere reads it). */
  async #uploadPart(piece: Piece, body: Uint8Array): Promise<void> {
    const part = this.#createUpload().then(async (UploadId) => {
      const res = await this.#client.send(new UploadPartCommand({ Bucket: this.#bucket, Key: this.#key, UploadId, PartNumber: piece.index + 1, Body: body, ContentLength: piece.size }));
      return { PartNumber: piece.index + 1, ETag: res.ETag };
    });
    part.catch(() => {});
    this.#parts[piece.index] = part;
    if (!this.#committing) this.#unchunked.push(piece);
    await part;
  }

  async #putChunk(piece: Piece, body: Uint8Array, copy: boolean): Promise<void> {
    await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: chunkKey(this.#prefix, piece.offset), Body: body, ContentLength: piece.size }));
    this.#landed(piece, copy);
  }

  /**
   * Lists the announcements of followers (one LIST, at most one at a time); once there is
   * one, the staging stops writing directly and backfills chunks for what it uploaded.
   */
  #lookForFollowers(): void {
    if (this.#followCheck || !this.#direct) return;
    this.#followCheck = (async () => {
      for await (const _ of this.#listUnder(`${this.#prefix}${FOLLOWER}`, 1)) {
        if (!this.#direct || this.#committing) return;
        this.#direct = false;
        this.#track(this.#backfill());
        return;
      }
    })()
      .catch(() => {})
      .finally(() => (this.#followCheck = undefined));
  }

  /** Writes a chunk for each part uploaded directly, in order, from the replay (one part in memory at a time). */
  async #backfill(): Promise<void> {
    for (let piece = this.#unchunked.shift(); piece; piece = this.#unchunked.shift()) {
      // At the commit the published object serves the readers elsewhere sooner.
      if (this.#committing) return;
      const body = new Uint8Array(piece.size);
      let at = 0;
      for await (const bytes of this.#replay!(piece.offset, piece.offset + piece.size)) (body.set(bytes, at), (at += bytes.byteLength));
      if (at !== piece.size) throw new Error(`the replay gave ${at} bytes for a part of ${piece.size}`);
      await this.#putChunk(piece, body, false);
    }
  }

  /** A chunk landed: `readable` moves over every chunk from it without a gap, each copied into the upload unless it is a part already. */
  #landed(piece: Piece, copy: boolean): void {
    this.#early.set(piece.offset, { piece, copy });
    for (let next = this.#early.get(this.#end()); next; next = this.#early.get(this.#end())) {
      this.#early.delete(next.piece.offset);
      this.#chunks.push({ offset: next.piece.offset, size: next.piece.size });
      if (next.copy) this.#copy(next.piece);
    }
    this.#readable = this.#end();
  }

  /** Copies a chunk into the final key's upload as its part. */
  #copy(piece: Piece): void {
    const copy = this.#createUpload().then(async (UploadId) => {
      const source = `${this.#bucket}/${encodeKey(chunkKey(this.#prefix, piece.offset))}`;
      await this.#copySlots.acquire();
      try {
        const res = await this.#client.send(new UploadPartCopyCommand({ Bucket: this.#bucket, Key: this.#key, UploadId, PartNumber: piece.index + 1, CopySource: source }));
        return { PartNumber: piece.index + 1, ETag: res.CopyPartResult?.ETag };
      } finally {
        this.#copySlots.release();
      }
    });
    copy.catch(() => {});
    this.#parts[piece.index] = copy;
  }

  async #drain(): Promise<void> {
    await this.#followCheck;
    while (this.#uploads.size > 0) await Promise.all(this.#uploads);
    if (this.#failure) throw this.#failure;
  }

  /** Aborts the multipart upload, if one was started. */
  async #abort(): Promise<void> {
    const upload = this.#upload;
    this.#upload = undefined;
    this.#parts = [];
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
    await this.#abort().catch((e) => Promise.reject(this.#store.fault(e)));
    await this.#delete(dropped.map((c) => chunkKey(this.#prefix, c.offset)));
    this.#restart();
  }

  async commit(contentType?: string): Promise<void> {
    const bucket = this.#bucket;
    const key = this.#key;
    this.#committing = true;
    try {
      await this.#followCheck;
      if (this.#count === 0 && this.#buffered < this.#options.partSizeBytes) {
        // The whole blob is in the buffer: one put under the key.
        await this.#abort();
        await this.#client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: concat(this.#buffer, this.#buffered), ContentLength: this.#buffered, ContentType: contentType }));
      } else {
        if (this.#buffered > 0) await this.#flush(this.#buffered);
        await this.#drain();
        const UploadId = await this.#createUpload();
        const parts = await Promise.all(this.#parts);
        await this.#client.send(new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId, MultipartUpload: { Parts: parts } }));
        this.#upload = undefined;
      }
    } catch (e) {
      await this.#abort().catch(() => {});
      throw this.#store.fault(e);
    }
    this.#buffer = [];
    this.#buffered = 0;
    this.#published = true;
    const chunks = this.#chunks;
    this.#chunks = [];
    this.#parts = [];
    await this.#delete([...chunks.map((c) => chunkKey(this.#prefix, c.offset)), ...(await this.#announcements().catch(() => []))]).catch(() => {});
  }

  async discard(): Promise<void> {
    this.#committing = true;
    await this.#followCheck;
    while (this.#uploads.size > 0) await Promise.allSettled(this.#uploads);
    await this.#abort().catch(() => {});
    const keys: string[] = [];
    for await (const c of this.#listChunks()) keys.push(chunkKey(this.#prefix, c.offset));
    await this.#delete([...keys, ...(await this.#announcements())]);
    this.#chunks = [];
    this.#buffer = [];
    this.#buffered = 0;
  }

  async #announcements(): Promise<string[]> {
    const keys: string[] = [];
    for await (const o of this.#listUnder(`${this.#prefix}${FOLLOWER}`)) keys.push(o.key);
    return keys;
  }

  async follow(): Promise<void> {
    if (this.#announcement) return;
    const key = `${this.#prefix}${FOLLOWER}${crypto.randomUUID()}`;
    await this.#client.send(new PutObjectCommand({ Bucket: this.#bucket, Key: key, Body: new Uint8Array(0), ContentLength: 0 })).catch((e) => Promise.reject(this.#store.fault(e)));
    this.#announcement = key;
  }

  async close(): Promise<void> {
    const key = this.#announcement;
    this.#announcement = undefined;
    if (key) await this.#delete([key]).catch(() => {});
  }

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
