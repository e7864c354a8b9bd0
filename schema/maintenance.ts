import { sqliteTable, integer, text } from 'drizzle-orm/sqlite-core';

/**
 * Cache-wide maintenance (garbage collection): one row per kind of run, whose lease makes
 * one run at a time across processes and isolates, and when the last one finished.
 */
export const maintenance = sqliteTable('maintenance', {
  name: text('name').primaryKey(),
  leaseOwner: text('lease_owner'),
  leaseExpiresAt: integer('lease_expires_at'),
  lastRunAt: integer('last_run_at'),
});

export type Maintenance = typeof maintenance.$inferSelect;
