import { sqliteTable, integer, text, primaryKey } from 'drizzle-orm/sqlite-core';
import { repositories } from './repositories.ts';

/**
 * Digests a repository is known to have: manifests it resolved or fetched, and blobs its
 * upstream confirmed (a HEAD or GET under that repository). With `manifest_blobs` this is
 * what lets content cached through one repository be served under another: only when
 * that repository reaches it too.
 */
export const repositoryContent = sqliteTable(
  'repository_content',
  {
    repositoryId: integer('repository_id').notNull().references(() => repositories.id, { onDelete: 'cascade' }),
    digest: text('digest').notNull(),
    /** Epoch milliseconds of the first time the repository was seen to have it. */
    recordedAt: integer('recorded_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.repositoryId, t.digest] })],
);

export type RepositoryContent = typeof repositoryContent.$inferSelect;
