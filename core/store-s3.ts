import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { verifyingStream } from './digest.ts';
import type { BlobStore, ByteRange, PutOptions, StoredObject } from './blobstore.ts';

export interface S3StoreOptions {
  bucket: string;
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

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const head = await this.#client.send(new HeadObjectCommand({ Bucket: this.#options.bucket, Key: key }));
      return { size: head.ContentLength ?? 0 };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
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
      throw e;
    }
  }

  async put(key: string, body: ReadableStream<Uint8Array>, options: PutOptions = {}): Promise<{ size: number }> {
    // We hold the key's lease, so any multipart upload still open for it belongs to a
    // writer that crashed: abort it rather than leave its parts billed forever.
    await this.abortIncompleteUploads(key);
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
      throw e;
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

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: key }));
  }

  async presign(key: string, ttlSeconds: number, options: { contentType?: string } = {}): Promise<string | undefined> {
    const command = new GetObjectCommand({ Bucket: this.#options.bucket, Key: key, ResponseContentType: options.contentType });
    return getSignedUrl(this.#client, command, { expiresIn: ttlSeconds });
  }
}
