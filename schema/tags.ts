import { sqliteTable, integer, text, primaryKey } from 'drizzle-orm/sqlite-core';
import { repositories } from './repositories.ts';

/** Last digest a tag resolved to upstream; served while fresh, and when the upstream is down. */
export const tags = sqliteTable(
  'tags',
  {
    repositoryId: integer('repository_id').notNull().references(() => repositories.id, { onDelete: 'cascade' }),
    tag: text('tag').notNull(),
    digest: text('digest').notNull(),
    /** Epoch milliseconds of the last successful upstream resolution. */
    resolvedAt: integer('resolved_at').notNull(),
  },
  (t) => [primaryKey({ columns: [t.repositoryId, t.tag] })],
);

export type Tag = typeof tags.$inferSelect;
