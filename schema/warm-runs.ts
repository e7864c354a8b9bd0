import { sqliteTable, integer, text, index } from 'drizzle-orm/sqlite-core';

/**
 * A warm-up asked for with `POST /api/warm`: what was asked (`request`, JSON: images,
 * platforms, extract), and once its `warm` job resolved it, the images it came to
 * (`images`, JSON: per reference and platform, the manifest or the error). Progress is
 * not stored: it is read from the blob and layer rows of those manifests. Removed by
 * garbage collection a week after it was asked for.
 */
export const warmRuns = sqliteTable(
  'warm_runs',
  {
    id: text('id').primaryKey(),
    request: text('request').notNull(),
    /** Who asked: `user:<name>`, `token:<name>`, `anonymous`. */
    requestedBy: text('requested_by').notNull(),
    createdAt: integer('created_at').notNull(),
    resolvedAt: integer('resolved_at'),
    images: text('images'),
  },
  (t) => [index('warm_runs_created').on(t.createdAt)],
);

export type WarmRun = typeof warmRuns.$inferSelect;
