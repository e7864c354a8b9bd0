import { sqliteTable, integer, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

/** A repository on one upstream, created the first time a client asks for it. */
export const repositories = sqliteTable(
  'repositories',
  {
    id: integer('id').primaryKey({ autoIncrement: true }),
    upstream: text('upstream').notNull(),
    name: text('name').notNull(),
    createdAt: integer('created_at').notNull(),
  },
  (t) => [uniqueIndex('repositories_upstream_name').on(t.upstream, t.name)],
);

export type Repository = typeof repositories.$inferSelect;
