import { sqliteTable, integer, text, index } from 'drizzle-orm/sqlite-core';

export const LAYER_STATES = ['pending', 'extracting', 'ready', 'failed'] as const;
export type LayerState = (typeof LAYER_STATES)[number];

/**
 * One row per extracted layer, keyed by diff_id (the sha256 of the uncompressed tar), so
 * a gzip and a zstd blob of the same tar share one extraction. `pending → extracting →
 * ready`, or `failed` with the error; the lease makes one consumer the extractor.
 */
export const layers = sqliteTable(
  'layers',
  {
    diffId: text('diff_id').primaryKey(),
    /** The compressed blob it was (or will be) extracted from. */
    blobDigest: text('blob_digest').notNull(),
    mediaType: text('media_type').notNull(),
    compression: text('compression', { enum: ['gzip', 'zstd', 'none'] }).notNull(),
    state: text('state', { enum: LAYER_STATES }).notNull().default('pending'),
    /** Bytes in layer.tar. */
    size: integer('size'),
    fileCount: integer('file_count'),
    tarKey: text('tar_key').notNull(),
    tocKey: text('toc_key').notNull(),
    tocDigest: text('toc_digest'),
    /** When an extract job was last sent for it: plan requests do not send another for a while. */
    queuedAt: integer('queued_at'),
    attempts: integer('attempts').notNull().default(0),
    error: text('error'),
    /** Whether another attempt can fix `error` (the error said so where it was thrown). */
    errorRetryable: integer('error_retryable', { mode: 'boolean' }),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: integer('lease_expires_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    readyAt: integer('ready_at'),
  },
  (t) => [index('layers_blob').on(t.blobDigest), index('layers_state').on(t.state)],
);

export type Layer = typeof layers.$inferSelect;
