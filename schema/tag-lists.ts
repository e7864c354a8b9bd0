import { sqliteTable, integer, text } from 'drizzle-orm/sqlite-core';
import { repositories } from './repositories.ts';

/**
 * A repository's last complete tag list from its upstream (a JSON array), served when the
 * upstream is down, errors or rate-limits.
 */
export const tagLists = sqliteTable('tag_lists', {
  repositoryId: integer('repository_id')
    .primaryKey()
    .references(() => repositories.id, { onDelete: 'cascade' }),
  tags: text('tags').notNull(),
  /** Epoch milliseconds of the upstream answer. */
  fetchedAt: integer('fetched_at').notNull(),
});

export type TagList = typeof tagLists.$inferSelect;
