import { sqliteTable, integer, text } from 'drizzle-orm/sqlite-core';

/** A verified manifest stored under `storage_key` (content-addressed, shared by repositories). */
export const manifests = sqliteTable('manifests', {
  digest: text('digest').primaryKey(),
  mediaType: text('media_type').notNull(),
  size: integer('size').notNull(),
  storageKey: text('storage_key').notNull(),
  createdAt: integer('created_at').notNull(),
  lastPulledAt: integer('last_pulled_at'),
  pullCount: integer('pull_count').notNull().default(0),
});

export type Manifest = typeof manifests.$inferSelect;
