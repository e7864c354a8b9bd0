import { sqliteTable, integer, text, index } from 'drizzle-orm/sqlite-core';

export const BLOB_STATES = ['pending', 'fetching', 'ready', 'failed', 'evicted'] as const;
export type BlobState = (typeof BLOB_STATES)[number];

/**
 * One row per blob digest. `pending → fetching → ready`, or `failed` with the error and
 * attempt count; `evicted` once retention removed its object (a later pull fetches it
 * again, as from pending). The lease makes exactly one consumer the owner while fetching.
 */
export const blobs = sqliteTable(
  'blobs',
  {
    digest: text('digest').primaryKey(),
    state: text('state', { enum: BLOB_STATES }).notNull().default('pending'),
    /** Size from the descriptor that introduced the blob, when one did. */
    size: integer('size'),
    mediaType: text('media_type'),
    storageKey: text('storage_key').notNull(),
    /** Where to fetch it from: the upstream host and repository that referenced it. */
    upstream: text('upstream').notNull(),
    name: text('name').notNull(),
    attempts: integer('attempts').notNull().default(0),
    error: text('error'),
    /** Whether another attempt can fix `error` (the error said so where it was thrown). */
    errorRetryable: integer('error_retryable', { mode: 'boolean' }),
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: integer('lease_expires_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
    readyAt: integer('ready_at'),
    pullCount: integer('pull_count').notNull().default(0),
    lastPulledAt: integer('last_pulled_at'),
  },
  (t) => [index('blobs_state').on(t.state)],
);

export type Blob = typeof blobs.$inferSelect;
