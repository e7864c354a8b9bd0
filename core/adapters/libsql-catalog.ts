// The catalog in libSQL (a local file, or Turso over HTTP): every drizzle query of the
// cache is here. Statements are single UPDATE/INSERT … RETURNING where two processes may
// race, so the database decides who wins; the connection waits for a busy file (see
// libsql.ts) instead of failing.
import { and, desc, eq, gt, gte, inArray, isNull, lt, lte, or, sql } from 'drizzle-orm';
import type { SQLiteColumn } from 'drizzle-orm/sqlite-core';
import type { Database } from './libsql.ts';
import { repositories } from '../../schema/repositories.ts';
import { tags } from '../../schema/tags.ts';
import { tagLists } from '../../schema/tag-lists.ts';
import { manifests } from '../../schema/manifests.ts';
import { manifestBlobs } from '../../schema/manifest-blobs.ts';
import { blobs } from '../../schema/blobs.ts';
import { layers } from '../../schema/layers.ts';
import { repositoryContent } from '../../schema/repository-content.ts';
import { maintenance } from '../../schema/maintenance.ts';
import { activity, upstreamHealth } from '../../schema/activity.ts';
import { warmRuns } from '../../schema/warm-runs.ts';
import type { ActivityBatch, ActivityRow, Blob, BlobSource, Catalog, Claim, Failure, KeyHolder, Layer, LayerSource, LeasedKind, Manifest, ManifestReference, PullTally, RepositoryUse, UpstreamHealthRow, WarmRun } from '../ports/catalog.ts';
import type { RepositoryTarget } from '../oci/reference.ts';

/** The two leased tables, seen through the columns a lease uses. */
const LEASED = {
  blob: { table: blobs, id: blobs.digest, busy: 'fetching' as const },
  layer: { table: layers, id: layers.diffId, busy: 'extracting' as const },
};

export class LibsqlCatalog implements Catalog {
  readonly #db: Database;

  constructor(db: Database) {
    this.#db = db;
  }

  /** The repository's row id, created on first use. */
  async #repositoryId(target: RepositoryTarget, now: number): Promise<number> {
    const [created] = await this.#db
      .insert(repositories)
      .values({ upstream: target.upstream, name: target.name, createdAt: now })
      .onConflictDoNothing()
      .returning({ id: repositories.id });
    if (created) return created.id;
    const [row] = await this.#db
      .select({ id: repositories.id })
      .from(repositories)
      .where(and(eq(repositories.upstream, target.upstream), eq(repositories.name, target.name)));
    return row!.id;
  }

  async tag(target: RepositoryTarget, tag: string): Promise<{ digest: string; resolvedAt: number } | undefined> {
    const [row] = await this.#db
      .select({ digest: tags.digest, resolvedAt: tags.resolvedAt })
      .from(tags)
      .innerJoin(repositories, eq(repositories.id, tags.repositoryId))
      .where(and(eq(repositories.upstream, target.upstream), eq(repositories.name, target.name), eq(tags.tag, tag)));
    return row;
  }

  async putTag(target: RepositoryTarget, tag: string, digest: string, now: number): Promise<void> {
    const repositoryId = await this.#repositoryId(target, now);
    await this.#db
      .insert(tags)
      .values({ repositoryId, tag, digest, resolvedAt: now })
      .onConflictDoUpdate({ target: [tags.repositoryId, tags.tag], set: { digest, resolvedAt: now } });
    await this.#db.insert(repositoryContent).values({ repositoryId, digest, recordedAt: now }).onConflictDoNothing();
  }

  async repositoriesReaching(digest: string): Promise<RepositoryTarget[]> {
    const rows = await this.#db.all<{ upstream: string; name: string }>(sql`
      WITH holders AS (
        SELECT ${digest} AS digest
        UNION SELECT manifest_digest FROM manifest_blobs WHERE blob_digest = ${digest}
        UNION SELECT parent.manifest_digest FROM manifest_blobs m JOIN manifest_blobs parent ON parent.blob_digest = m.manifest_digest AND parent.kind = 'manifest' WHERE m.blob_digest = ${digest}
      )
      SELECT DISTINCT r.upstream AS upstream, r.name AS name FROM repository_content c JOIN repositories r ON r.id = c.repository_id WHERE c.digest IN (SELECT digest FROM holders)`);
    return rows.map((r) => ({ upstream: r.upstream, name: r.name }));
  }

  async readyLayersOf(blobDigest: string): Promise<Layer[]> {
    return this.#db.select().from(layers).where(and(eq(layers.blobDigest, blobDigest), eq(layers.state, 'ready')));
  }

  async layersOfEvicted(limit: number): Promise<Layer[]> {
    const rows = await this.#db
      .select({ layer: layers })
      .from(layers)
      .leftJoin(blobs, eq(blobs.digest, layers.blobDigest))
      .where(and(eq(layers.state, 'ready'), or(isNull(blobs.digest), sql`${blobs.state} <> 'ready'`)))
      .limit(limit);
    return rows.map((r) => r.layer);
  }

  async beginEviction<K extends LeasedKind>(kind: K, id: string, owner: string, leaseMs: number, notPulledSince: number, now: number, options: { alone?: boolean } = {}): Promise<(K extends 'blob' ? Blob : Layer) | undefined> {
    type Row = K extends 'blob' ? Blob : Layer;
    const lease = { leaseOwner: owner, leaseExpiresAt: now + leaseMs, updatedAt: now };
    if (kind === 'blob') {
      const [row] = await this.#db
        .update(blobs)
        .set({ state: 'evicted', readyAt: null, ...lease })
        .where(and(eq(blobs.digest, id), eq(blobs.state, 'ready'), lte(sql`max(coalesce(${blobs.lastPulledAt}, 0), coalesce(${blobs.readyAt}, 0))`, notPulledSince)))
        .returning();
      return row as Row | undefined;
    }
    const [row] = await this.#db
      .update(layers)
      .set({ state: 'extracting', ...lease })
      .where(
        and(
          eq(layers.diffId, id),
          eq(layers.state, 'ready'),
          lte(sql`coalesce(${layers.readyAt}, 0)`, notPulledSince),
          options.alone
            ? sql`NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.digest = ${layers.blobDigest} AND coalesce(blobs.last_pulled_at, 0) > ${notPulledSince})`
            : sql`NOT EXISTS (SELECT 1 FROM blobs WHERE blobs.digest = ${layers.blobDigest} AND blobs.state = 'ready')`,
        ),
      )
      .returning();
    return row as Row | undefined;
  }

  async endEviction(kind: LeasedKind, id: string, owner: string, now: number): Promise<void> {
    if (kind === 'blob') {
      await this.#db.update(blobs).set({ leaseOwner: null, leaseExpiresAt: null, updatedAt: now }).where(and(eq(blobs.digest, id), eq(blobs.leaseOwner, owner)));
      return;
    }
    await this.#db
      .update(layers)
      .set({ state: 'pending', size: null, fileCount: null, tocDigest: null, readyAt: null, queuedAt: null, leaseOwner: null, leaseExpiresAt: null, updatedAt: now })
      .where(and(eq(layers.diffId, id), eq(layers.leaseOwner, owner)));
  }

  async claimMaintenance(name: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
    await this.#db.insert(maintenance).values({ name }).onConflictDoNothing();
    const claimed = await this.#db
      .update(maintenance)
      .set({ leaseOwner: owner, leaseExpiresAt: now + leaseMs })
      .where(and(eq(maintenance.name, name), or(isNull(maintenance.leaseOwner), lte(maintenance.leaseExpiresAt, now))))
      .returning({ name: maintenance.name });
    return claimed.length > 0;
  }

  async renewMaintenance(name: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
    const renewed = await this.#db
      .update(maintenance)
      .set({ leaseExpiresAt: now + leaseMs })
      .where(and(eq(maintenance.name, name), eq(maintenance.leaseOwner, owner)))
      .returning({ name: maintenance.name });
    return renewed.length > 0;
  }

  async releaseMaintenance(name: string, owner: string, now: number): Promise<void> {
    await this.#db
      .update(maintenance)
      .set({ leaseOwner: null, leaseExpiresAt: null, lastRunAt: now })
      .where(and(eq(maintenance.name, name), eq(maintenance.leaseOwner, owner)));
  }

  async recordInRepository(target: RepositoryTarget, digest: string, now: number): Promise<void> {
    const repositoryId = await this.#repositoryId(target, now);
    await this.#db.insert(repositoryContent).values({ repositoryId, digest, recordedAt: now }).onConflictDoNothing();
  }

  async inRepository(target: RepositoryTarget, digest: string): Promise<boolean> {
    // The digest itself was seen in the repository; or a manifest seen there references
    // it; or an index seen there references a manifest that does. Three index lookups.
    const rows = await this.#db.all(sql`
      WITH repo AS (SELECT id FROM repositories WHERE upstream = ${target.upstream} AND name = ${target.name}),
      seen AS (SELECT digest FROM repository_content WHERE repository_id = (SELECT id FROM repo))
      SELECT 1 FROM seen WHERE digest = ${digest}
      UNION ALL
      SELECT 1 FROM manifest_blobs m WHERE m.blob_digest = ${digest} AND m.manifest_digest IN (SELECT digest FROM seen)
      UNION ALL
      SELECT 1 FROM manifest_blobs m JOIN manifest_blobs parent ON parent.blob_digest = m.manifest_digest AND parent.kind = 'manifest'
        WHERE m.blob_digest = ${digest} AND parent.manifest_digest IN (SELECT digest FROM seen)
      LIMIT 1`);
    return rows.length > 0;
  }

  async tagList(target: RepositoryTarget): Promise<string[] | undefined> {
    const [row] = await this.#db
      .select({ tags: tagLists.tags })
      .from(tagLists)
      .innerJoin(repositories, eq(repositories.id, tagLists.repositoryId))
      .where(and(eq(repositories.upstream, target.upstream), eq(repositories.name, target.name)));
    return row ? (JSON.parse(row.tags) as string[]) : undefined;
  }

  async putTagList(target: RepositoryTarget, list: readonly string[], now: number): Promise<void> {
    const repositoryId = await this.#repositoryId(target, now);
    const text = JSON.stringify(list);
    await this.#db
      .insert(tagLists)
      .values({ repositoryId, tags: text, fetchedAt: now })
      .onConflictDoUpdate({ target: tagLists.repositoryId, set: { tags: text, fetchedAt: now } });
  }

  async manifest(digest: string): Promise<Manifest | undefined> {
    const [row] = await this.#db.select().from(manifests).where(eq(manifests.digest, digest));
    return row;
  }

  async recordManifest(row: { digest: string; mediaType: string; size: number; storageKey: string }, references: readonly ManifestReference[], now: number): Promise<void> {
    // References first: a manifest row is only ever seen with its references in place.
    for (const ref of references) {
      if (ref.blob) await this.recordBlob(ref.blob, now);
      await this.#db
        .insert(manifestBlobs)
        .values({ manifestDigest: row.digest, blobDigest: ref.digest, kind: ref.kind, position: ref.position })
        .onConflictDoNothing();
    }
    await this.#db.insert(manifests).values({ ...row, createdAt: now }).onConflictDoNothing();
  }

  async blobsNotReady(manifestDigest: string): Promise<string[]> {
    const rows = await this.#db
      .select({ digest: blobs.digest, state: blobs.state })
      .from(manifestBlobs)
      .innerJoin(blobs, eq(blobs.digest, manifestBlobs.blobDigest))
      .where(eq(manifestBlobs.manifestDigest, manifestDigest));
    return rows.filter((r) => r.state !== 'ready').map((r) => r.digest);
  }

  async blob(digest: string): Promise<Blob | undefined> {
    const [row] = await this.#db.select().from(blobs).where(eq(blobs.digest, digest));
    return row;
  }

  async recordBlob(source: BlobSource, now: number): Promise<void> {
    await this.#db
      .insert(blobs)
      .values({
        digest: source.digest,
        size: source.size,
        mediaType: source.mediaType,
        storageKey: source.storageKey,
        upstream: source.upstream,
        name: source.name,
        createdAt: now,
        updatedAt: now,
      })
      .onConflictDoNothing();
  }

  async blobMissing(digest: string, now: number): Promise<void> {
    await this.#db
      .update(blobs)
      .set({ state: 'pending', readyAt: null, updatedAt: now })
      .where(and(eq(blobs.digest, digest), eq(blobs.state, 'ready')));
  }

  async blobStored(digest: string, owner: string, size: number, now: number): Promise<void> {
    await this.#db
      .update(blobs)
      .set({ state: 'ready', size, readyAt: now, updatedAt: now, error: null, errorRetryable: null, leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(blobs.digest, digest), eq(blobs.leaseOwner, owner)));
  }

  async layer(diffId: string): Promise<Layer | undefined> {
    const [row] = await this.#db.select().from(layers).where(eq(layers.diffId, diffId));
    return row;
  }

  async layers(diffIds: readonly string[]): Promise<Layer[]> {
    if (diffIds.length === 0) return [];
    return this.#db.select().from(layers).where(inArray(layers.diffId, [...new Set(diffIds)]));
  }

  async recordLayer(source: LayerSource, now: number): Promise<void> {
    await this.#db
      .insert(layers)
      .values({ ...source, createdAt: now, updatedAt: now })
      .onConflictDoNothing();
  }

  async layerStored(diffId: string, owner: string, done: { size: number; fileCount: number; tocDigest: string }, now: number): Promise<void> {
    await this.#db
      .update(layers)
      .set({ state: 'ready', size: done.size, fileCount: done.fileCount, tocDigest: done.tocDigest, readyAt: now, updatedAt: now, error: null, errorRetryable: null, leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(layers.diffId, diffId), eq(layers.leaseOwner, owner)));
  }

  async layerBlobFailed(diffId: string, error: string, retryable: boolean, now: number): Promise<void> {
    await this.#db
      .update(layers)
      .set({ state: 'failed', error, errorRetryable: retryable, updatedAt: now })
      .where(and(eq(layers.diffId, diffId), eq(layers.state, 'pending')));
  }

  async markExtractSent(diffIds: readonly string[], now: number, sentBefore: number): Promise<string[]> {
    if (diffIds.length === 0) return [];
    const rows = await this.#db
      .update(layers)
      .set({ queuedAt: now })
      .where(and(inArray(layers.diffId, [...diffIds]), or(isNull(layers.queuedAt), lte(layers.queuedAt, sentBefore))))
      .returning({ diffId: layers.diffId });
    return rows.map((r) => r.diffId);
  }

  async claim<K extends LeasedKind>(kind: K, id: string, owner: string, leaseMs: number, now: number): Promise<Claim<K extends 'blob' ? Blob : Layer>> {
    type Row = K extends 'blob' ? Blob : Layer;
    const { table, id: idColumn, busy } = LEASED[kind];
    const [claimed] = await this.#db
      .update(table)
      .set({ state: busy, leaseOwner: owner, leaseExpiresAt: now + leaseMs, attempts: sql`${table.attempts} + 1`, updatedAt: now })
      .where(
        and(
          eq(idColumn, id),
          or(
            inArray(table.state, ['pending', 'failed']),
            and(eq(table.state, busy), lte(table.leaseExpiresAt, now)),
            // An evicted blob is fetched again, once retention has let go of it.
            kind === 'blob' ? and(eq(blobs.state, 'evicted'), or(isNull(blobs.leaseOwner), lte(blobs.leaseExpiresAt, now))) : undefined,
          ),
        ),
      )
      .returning();
    if (claimed) return { claimed: claimed as Row };
    const [current] = await this.#db.select().from(table).where(eq(idColumn, id));
    return { current: current as Row | undefined };
  }

  async renew(kind: LeasedKind, id: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
    const { table, id: idColumn } = LEASED[kind];
    const rows = await this.#db
      .update(table)
      .set({ leaseExpiresAt: now + leaseMs, updatedAt: now })
      .where(and(eq(idColumn, id), eq(table.leaseOwner, owner)))
      .returning({ id: idColumn });
    return rows.length > 0;
  }

  async fail(kind: LeasedKind, id: string, owner: string, error: { message: string; retryable: boolean }, now: number): Promise<void> {
    const { table, id: idColumn } = LEASED[kind];
    await this.#db
      .update(table)
      .set({ state: 'failed', error: error.message, errorRetryable: error.retryable, updatedAt: now, leaseOwner: null, leaseExpiresAt: null })
      .where(and(eq(idColumn, id), eq(table.leaseOwner, owner)));
  }

  async recordPulls(tallies: readonly PullTally[]): Promise<void> {
    for (const t of tallies) {
      const table = t.kind === 'blob' ? blobs : manifests;
      await this.#db
        .update(table)
        .set({ pullCount: sql`${table.pullCount} + ${t.count}`, lastPulledAt: sql`max(coalesce(${table.lastPulledAt}, 0), ${t.lastPulledAt})` })
        .where(eq(table.digest, t.digest));
    }
  }

  async usage(): Promise<{ blobs: number; blobBytes: number; layers: number; layerBytes: number }> {
    const [b] = await this.#db
      .select({ n: sql<number>`count(*)`, bytes: sql<number>`coalesce(sum(${blobs.size}), 0)` })
      .from(blobs)
      .where(eq(blobs.state, 'ready'));
    const [l] = await this.#db
      .select({ n: sql<number>`count(*)`, bytes: sql<number>`coalesce(sum(${layers.size}), 0)` })
      .from(layers)
      .where(eq(layers.state, 'ready'));
    return { blobs: Number(b?.n ?? 0), blobBytes: Number(b?.bytes ?? 0), layers: Number(l?.n ?? 0), layerBytes: Number(l?.bytes ?? 0) };
  }

  async leastRecentlyPulledLayers(limit: number, after?: { lastPulledAt: number; diffId: string }): Promise<Array<{ diffId: string; blobDigest: string; size: number; lastPulledAt: number }>> {
    // A layer is used when a plan hands it out, which counts a pull of its blob.
    const lastPulledAt = sql<number>`max(coalesce(${layers.readyAt}, 0), coalesce((SELECT last_pulled_at FROM blobs WHERE blobs.digest = ${layers.blobDigest}), 0))`;
    const rows = await this.#db
      .select({ diffId: layers.diffId, blobDigest: layers.blobDigest, size: layers.size, lastPulledAt })
      .from(layers)
      .where(and(eq(layers.state, 'ready'), after ? sql`(${lastPulledAt}, ${layers.diffId}) > (${after.lastPulledAt}, ${after.diffId})` : undefined))
      .orderBy(lastPulledAt, layers.diffId)
      .limit(limit);
    return rows.map((r) => ({ diffId: r.diffId, blobDigest: r.blobDigest, size: r.size ?? 0, lastPulledAt: Number(r.lastPulledAt) }));
  }

  async leastRecentlyPulled(limit: number, after?: { lastPulledAt: number; digest: string }): Promise<Array<{ digest: string; size: number; lastPulledAt: number }>> {
    // Refetched after an eviction counts as pulled then: max, not coalesce.
    const lastPulledAt = sql<number>`max(coalesce(${blobs.lastPulledAt}, 0), coalesce(${blobs.readyAt}, 0))`;
    const rows = await this.#db
      .select({ digest: blobs.digest, size: blobs.size, lastPulledAt })
      .from(blobs)
      .where(and(eq(blobs.state, 'ready'), after ? sql`(${lastPulledAt}, ${blobs.digest}) > (${after.lastPulledAt}, ${after.digest})` : undefined))
      .orderBy(lastPulledAt, blobs.digest)
      .limit(limit);
    return rows.map((r) => ({ digest: r.digest, size: r.size ?? 0, lastPulledAt: Number(r.lastPulledAt) }));
  }

  async keyHolders(keys: readonly string[], now: number): Promise<Map<string, KeyHolder>> {
    const found = new Map<string, KeyHolder>();
    if (keys.length === 0) return found;
    const live = (expires: number | null) => expires !== null && expires > now;
    for (const b of await this.#db.select({ digest: blobs.digest, key: blobs.storageKey, state: blobs.state, expires: blobs.leaseExpiresAt }).from(blobs).where(inArray(blobs.storageKey, [...keys]))) {
      const held = b.state === 'ready' || (b.state === 'fetching' && live(b.expires));
      found.set(b.key, { kind: 'blob', id: b.digest, state: held ? 'held' : 'idle' });
    }
    for (const m of await this.#db.select({ digest: manifests.digest, key: manifests.storageKey }).from(manifests).where(inArray(manifests.storageKey, [...keys]))) {
      found.set(m.key, { kind: 'manifest', id: m.digest, state: 'held' });
    }
    const layerRows = await this.#db
      .select({ diffId: layers.diffId, tarKey: layers.tarKey, tocKey: layers.tocKey, state: layers.state, expires: layers.leaseExpiresAt })
      .from(layers)
      .where(or(inArray(layers.tarKey, [...keys]), inArray(layers.tocKey, [...keys])));
    for (const l of layerRows) {
      const holder: KeyHolder = { kind: 'layer', id: l.diffId, state: l.state === 'ready' || (l.state === 'extracting' && live(l.expires)) ? 'held' : 'idle' };
      found.set(l.tarKey, holder);
      found.set(l.tocKey, holder);
    }
    return found;
  }

  async releaseClaim(digest: string, owner: string, now: number): Promise<void> {
    await this.#db.update(blobs).set({ state: 'pending', leaseOwner: null, leaseExpiresAt: null, updatedAt: now }).where(and(eq(blobs.digest, digest), eq(blobs.leaseOwner, owner)));
  }

  async beginSweep(kind: LeasedKind, id: string, owner: string, leaseMs: number, now: number): Promise<boolean> {
    const lease = { leaseOwner: owner, leaseExpiresAt: now + leaseMs, updatedAt: now };
    if (kind === 'blob') {
      const rows = await this.#db
        .update(blobs)
        .set({ state: 'evicted', readyAt: null, ...lease })
        .where(and(eq(blobs.digest, id), inArray(blobs.state, ['pending', 'failed', 'evicted', 'fetching']), or(isNull(blobs.leaseExpiresAt), lte(blobs.leaseExpiresAt, now))))
        .returning({ id: blobs.digest });
      return rows.length > 0;
    }
    const rows = await this.#db
      .update(layers)
      .set({ state: 'extracting', ...lease })
      .where(and(eq(layers.diffId, id), inArray(layers.state, ['pending', 'failed', 'extracting']), or(isNull(layers.leaseExpiresAt), lte(layers.leaseExpiresAt, now))))
      .returning({ id: layers.diffId });
    return rows.length > 0;
  }

  async recordActivity(batch: ActivityBatch): Promise<void> {
    if (batch.rows.length > 0) {
      await this.#db
        .insert(activity)
        .values(batch.rows.map((r) => ({ bucket: r.bucket, metric: r.metric, value: r.value })))
        .onConflictDoUpdate({ target: [activity.bucket, activity.metric], set: { value: sql`${activity.value} + excluded.value` } });
    }
    for (const h of batch.health) {
      await this.#db
        .insert(upstreamHealth)
        .values(h)
        .onConflictDoUpdate({
          target: upstreamHealth.host,
          set: {
            lastSuccessAt: sql`max(coalesce(${upstreamHealth.lastSuccessAt}, 0), coalesce(excluded.last_success_at, 0))`,
            lastError: sql`CASE WHEN coalesce(excluded.last_error_at, 0) >= coalesce(${upstreamHealth.lastErrorAt}, 0) AND excluded.last_error_at IS NOT NULL THEN excluded.last_error ELSE ${upstreamHealth.lastError} END`,
            lastErrorAt: sql`CASE WHEN coalesce(excluded.last_error_at, 0) >= coalesce(${upstreamHealth.lastErrorAt}, 0) AND excluded.last_error_at IS NOT NULL THEN excluded.last_error_at ELSE ${upstreamHealth.lastErrorAt} END`,
          },
        });
    }
  }

  async activitySince(since: number): Promise<ActivityRow[]> {
    return this.#db.select().from(activity).where(gte(activity.bucket, since)).orderBy(activity.bucket);
  }

  async removeActivity(before: number, dryRun: boolean): Promise<number> {
    return this.#removeOlder(activity, activity.bucket, before, dryRun);
  }

  /** Rows of `table` whose `column` is before `before`: counted (a dry run) or deleted; how many. */
  async #removeOlder(table: typeof activity | typeof warmRuns, column: SQLiteColumn, before: number, dryRun: boolean): Promise<number> {
    const older = lt(column, before);
    if (dryRun) {
      const [row] = await this.#db.select({ n: sql<number>`count(*)` }).from(table).where(older);
      return Number(row?.n ?? 0);
    }
    return (await this.#db.delete(table).where(older).returning({ n: sql<number>`1` })).length;
  }

  async upstreamHealth(): Promise<UpstreamHealthRow[]> {
    const rows = await this.#db.select().from(upstreamHealth).orderBy(upstreamHealth.host);
    return rows.map((r) => ({ ...r, lastSuccessAt: r.lastSuccessAt || null }));
  }

  async recentFailures(limit: number): Promise<Failure[]> {
    const failedBlobs = await this.#db
      .select({ id: blobs.digest, upstream: blobs.upstream, name: blobs.name, error: blobs.error, retryable: blobs.errorRetryable, attempts: blobs.attempts, at: blobs.updatedAt })
      .from(blobs)
      .where(eq(blobs.state, 'failed'))
      .orderBy(desc(blobs.updatedAt))
      .limit(limit);
    const failedLayers = await this.#db
      .select({ id: layers.diffId, source: layers.blobDigest, error: layers.error, retryable: layers.errorRetryable, attempts: layers.attempts, at: layers.updatedAt })
      .from(layers)
      .where(eq(layers.state, 'failed'))
      .orderBy(desc(layers.updatedAt))
      .limit(limit);
    const all: Failure[] = [
      ...failedBlobs.map((b) => ({ kind: 'blob' as const, id: b.id, source: `${b.upstream}/${b.name}`, error: b.error ?? '', retryable: b.retryable ?? false, attempts: b.attempts, at: b.at })),
      ...failedLayers.map((l) => ({ kind: 'layer' as const, id: l.id, source: l.source, error: l.error ?? '', retryable: l.retryable ?? false, attempts: l.attempts, at: l.at })),
    ];
    return all.sort((a, b) => b.at - a.at).slice(0, limit);
  }

  async topRepositories(limit: number): Promise<RepositoryUse[]> {
    // What a repository reaches: its content, the blobs of its manifests, and of their children (an index's).
    const rows = await this.#db.all<{ upstream: string; name: string; pulls: number; bytes: number; last_pulled_at: number | null }>(sql`
      WITH reach AS (
        SELECT c.repository_id AS rid, c.digest AS digest FROM repository_content c
        UNION SELECT c.repository_id, mb.blob_digest FROM repository_content c JOIN manifest_blobs mb ON mb.manifest_digest = c.digest
        UNION SELECT c.repository_id, child.blob_digest FROM repository_content c
          JOIN manifest_blobs mb ON mb.manifest_digest = c.digest AND mb.kind = 'manifest'
          JOIN manifest_blobs child ON child.manifest_digest = mb.blob_digest
      )
      SELECT r.upstream AS upstream, r.name AS name,
        coalesce(sum(m.pull_count), 0) AS pulls,
        coalesce(sum(CASE WHEN b.state = 'ready' THEN b.size END), 0) AS bytes,
        max(m.last_pulled_at) AS last_pulled_at
      FROM reach JOIN repositories r ON r.id = reach.rid
      LEFT JOIN manifests m ON m.digest = reach.digest
      LEFT JOIN blobs b ON b.digest = reach.digest
      GROUP BY r.id
      ORDER BY pulls DESC, bytes DESC, r.upstream, r.name
      LIMIT ${limit}`);
    return rows.map((r) => ({ upstream: r.upstream, name: r.name, pulls: Number(r.pulls), bytes: Number(r.bytes), lastPulledAt: r.last_pulled_at === null ? null : Number(r.last_pulled_at) }));
  }

  async inFlight(now: number): Promise<{ transfers: number; extractions: number }> {
    const [b] = await this.#db.select({ n: sql<number>`count(*)` }).from(blobs).where(and(eq(blobs.state, 'fetching'), gt(blobs.leaseExpiresAt, now)));
    const [l] = await this.#db.select({ n: sql<number>`count(*)` }).from(layers).where(and(eq(layers.state, 'extracting'), gt(layers.leaseExpiresAt, now)));
    return { transfers: Number(b?.n ?? 0), extractions: Number(l?.n ?? 0) };
  }

  async createWarmRun(run: { id: string; request: string; requestedBy: string }, now: number): Promise<void> {
    await this.#db.insert(warmRuns).values({ ...run, createdAt: now });
  }

  async warmRun(id: string): Promise<WarmRun | undefined> {
    return (await this.#db.select().from(warmRuns).where(eq(warmRuns.id, id)))[0];
  }

  async resolveWarmRun(id: string, images: string, now: number): Promise<void> {
    await this.#db.update(warmRuns).set({ images, resolvedAt: now }).where(eq(warmRuns.id, id));
  }

  async removeWarmRuns(before: number, dryRun: boolean): Promise<number> {
    return this.#removeOlder(warmRuns, warmRuns.createdAt, before, dryRun);
  }

  async manifestBlobs(manifestDigests: readonly string[]): Promise<Array<{ manifest: string; kind: 'config' | 'layer'; blob: Blob }>> {
    if (manifestDigests.length === 0) return [];
    const rows = await this.#db
      .select({ manifest: manifestBlobs.manifestDigest, kind: manifestBlobs.kind, blob: blobs })
      .from(manifestBlobs)
      .innerJoin(blobs, eq(blobs.digest, manifestBlobs.blobDigest))
      .where(and(inArray(manifestBlobs.manifestDigest, [...manifestDigests]), inArray(manifestBlobs.kind, ['config', 'layer'])))
      .orderBy(manifestBlobs.manifestDigest, manifestBlobs.position);
    return rows.map((r) => ({ manifest: r.manifest, kind: r.kind as 'config' | 'layer', blob: r.blob }));
  }

  async layersOfBlobs(blobDigests: readonly string[]): Promise<Layer[]> {
    if (blobDigests.length === 0) return [];
    return this.#db.select().from(layers).where(inArray(layers.blobDigest, [...blobDigests]));
  }
}
