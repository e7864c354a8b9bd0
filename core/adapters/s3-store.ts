import {
  AbortMultipartUploadCommand,
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
import type { BlobStore, ByteRange, ListedObject, PutOptions, StoredObject } from '../ports/blob-store.ts';
import { StoreUnavailableError, errorCodeIn } from '../oci/errors.ts';

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
        if (o.Key !== undefined) yield { key: o.Key, size: o.Size ?? 0, modifiedAt: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  async delete(key: string): Promise<void> {
    await this.#client.send(new DeleteObjectCommand({ Bucket: this.#options.bucket, Key: key }));
  }

  async presign(key: string, ttlSeconds: number, options: { contentType?: string } = {}): Promise<string | undefined> {
    const command = new GetObjectCommand({ Bucket: this.#options.bucket, Key: key, ResponseContentType: options.contentType });
    return getSignedUrl(this.#client, command, { expiresIn: ttlSeconds }).catch((e) => Promise.reject(this.#fault(e)));
  }
}
