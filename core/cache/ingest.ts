import { and, eq, inArray, lte, or, sql } from 'drizzle-orm';
import { blobs, type Blob } from '../../schema/blobs.ts';
import type { Database } from '../adapters/libsql.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { UpstreamRegistry } from '../adapters/http-upstream.ts';
import { isOciError, redactUrls } from '../oci/errors.ts';
import { blobKey, parseDigest } from '../oci/reference.ts';
import { holdLease } from './lease.ts';

export interface IngestDeps {
  db: Database;
  store: BlobStore;
  upstreams: ReadonlyMap<string, UpstreamRegistry>;
  leaseMs: number;
  now?: () => number;
}

/** What a job handler tells its queue: done, or failed with whether to try again. */
export type JobResult =
  | { ok: true; outcome: 'already-ready' | 'leased-elsewhere' | 'scheduled' }
  | { ok: true; outcome: 'stored'; bytes: number }
  | { ok: false; retry: boolean; error: string };

export interface BlobSource {
  digest: string;
  upstream: string;
  name: string;
  size?: number | undefined;
  mediaType?: string | undefined;
}

/** Records a blob as `pending` unless a row already exists. Throws DIGEST_INVALID. */
export async function recordBlob(db: Database, source: BlobSource, now = Date.now()): Promise<void> {
  const digest = parseDigest(source.digest);
  await db
    .insert(blobs)
    .values({
      digest: digest.value,
      size: source.size,
      mediaType: source.mediaType,
      storageKey: blobKey(digest),
      upstream: source.upstream,
      name: source.name,
      createdAt: now,
      updatedAt: now,
    })
    .onConflictDoNothing();
}

const TRANSIENT_STATUSES = new Set([408, 429, 500, 502, 503, 504]);

/**
 * The ingest job: claims the blob row with a lease (so exactly one consumer fetches it),
 * streams the upstream body through a digest + size check into the store, and marks the
 * row ready. A blob that is already ready is a no-op. Every failure is recorded on the
 * row as `failed` with its error; the result says whether the queue should retry.
 */
export async function ingestBlob(deps: IngestDeps, digest: string, owner: string): Promise<JobResult> {
  const now = deps.now ?? Date.now;
  const { db } = deps;
  const claimedAt = now();
  const [row] = await db
    .update(blobs)
    .set({ state: 'fetching', leaseOwner: owner, leaseExpiresAt: claimedAt + deps.leaseMs, attempts: sql`${blobs.attempts} + 1`, updatedAt: claimedAt })
    .where(
      and(
        eq(blobs.digest, digest),
        or(inArray(blobs.state, ['pending', 'failed']), and(eq(blobs.state, 'fetching'), lte(blobs.leaseExpiresAt, claimedAt))),
      ),
    )
    .returning();
  if (!row) {
    const [current] = await db.select().from(blobs).where(eq(blobs.digest, digest));
    if (!current) return { ok: false, retry: false, error: `no blob row for ${digest}` };
    if (current.state === 'ready') return { ok: true, outcome: 'already-ready' };
    // A live lease means another consumer is fetching it under its own job or message,
    // which is retried or redelivered if that consumer fails: this duplicate is done.
    return { ok: true, outcome: 'leased-elsewhere' };
  }

  // Renew the lease while the body streams; losing it aborts the download and the upload.
  const lease = holdLease('blob', async () => {
    const t = now();
    const renewed = await db
      .update(blobs)
      .set({ leaseExpiresAt: t + deps.leaseMs, updatedAt: t })
      .where(and(eq(blobs.digest, digest), eq(blobs.leaseOwner, owner)))
      .returning({ digest: blobs.digest });
    return renewed.length > 0;
  }, deps.leaseMs);
  try {
    const bytes = await fetchIntoStore(deps, row, lease.signal);
    const t = now();
    await db
      .update(blobs)
      .set({ state: 'ready', readyAt: t, updatedAt: t, error: null, leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(blobs.digest, digest), eq(blobs.leaseOwner, owner)));
    return { ok: true, outcome: 'stored', bytes };
  } catch (e) {
    const failure = classify(e);
    await db
      .update(blobs)
      .set({ state: 'failed', error: failure.error, updatedAt: now(), leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(blobs.digest, digest), eq(blobs.leaseOwner, owner)));
    return failure;
  } finally {
    lease.stop();
  }
}

async function fetchIntoStore(deps: IngestDeps, row: Blob, signal: AbortSignal): Promise<number> {
  const upstream = deps.upstreams.get(row.upstream);
  if (!upstream) throw new PermanentError(`upstream ${row.upstream} is not configured`);
  const res = await upstream.request('GET', `/v2/${row.name}/blobs/${row.digest}`, row.name, {}, signal);
  if (!res.ok) {
    await res.body?.cancel();
    const message = `upstream answered ${res.status} for the blob`;
    throw TRANSIENT_STATUSES.has(res.status) ? new Error(message) : new PermanentError(message);
  }
  const contentLength = res.headers.get('content-length');
  const size = row.size ?? (contentLength !== null ? Number(contentLength) : undefined);
  if (!res.body) throw new Error('upstream sent no body');
  const stored = await deps.store.put(row.storageKey, res.body, { expected: { digest: row.digest, size }, contentType: 'application/octet-stream' });
  if (row.size === null) await deps.db.update(blobs).set({ size: stored.size }).where(eq(blobs.digest, row.digest));
  return stored.size;
}

/** A failure that retrying will not fix (the upstream does not have the blob, a malformed layer, ...). */
export class PermanentError extends Error {}

export function classify(e: unknown): { ok: false; retry: boolean; error: string } {
  if (e instanceof PermanentError) return { ok: false, retry: false, error: e.message };
  if (isOciError(e)) {
    const detail = e.detail ? ` ${JSON.stringify(e.detail)}` : '';
    // Wrong bytes may be a cut or corrupted transfer: retry, the queue bounds the attempts.
    // A layer that does not decompress to its diff_id, or cannot be read at all, will not change.
    const retry = !['UNAUTHORIZED', 'LAYER_INVALID', 'UNSUPPORTED'].includes(e.code);
    return { ok: false, retry, error: `${e.code}: ${e.message}${detail}` };
  }
  return { ok: false, retry: true, error: redactUrls(e instanceof Error ? e.message : String(e)) };
}
