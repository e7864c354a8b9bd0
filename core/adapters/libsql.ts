import { createClient } from '@libsql/client';
import { drizzle, type LibSQLDatabase } from 'drizzle-orm/libsql';
import * as schema from '../../schema/index.ts';

export type Database = LibSQLDatabase<typeof schema>;

/** How long a statement waits for a database file another process holds locked. */
const BUSY_TIMEOUT_MS = 5000;

/**
 * Connects to libSQL without touching its schema: what a Worker does (Turso over
 * `libsql://` or `https://`; `@libsql/client` picks its web build under workerd, which
 * refuses `file:` URLs). Migrations are applied by `openDatabase` or drizzle-kit.
 */
export function connectDatabase(url: string, authToken?: string): { db: Database; close(): void } {
  // Several processes (and ingest workers) share a database file: a statement that finds
  // it locked waits up to BUSY_TIMEOUT_MS instead of failing with SQLITE_BUSY. It has to be
  // the client's `timeout` (applied to every connection it opens): with only a
  // `PRAGMA busy_timeout = 5000` sent through the client, which reads back as set, four
  // processes writing at once still got SQLITE_BUSY at once (catalog.conformance.test.ts).
  const client = createClient({ url, authToken, timeout: BUSY_TIMEOUT_MS });
  return { db: drizzle(client, { schema }), close: () => client.close() };
}

/**
 * Opens libSQL (a local file or Turso) and applies the drizzle migrations in schema/migrations
 * (`migrations` seen from this source file unless given: a bundle passes its own, see workers/node.ts).
 */
export async function openDatabase(url: string, authToken?: string, migrations?: URL): Promise<{ db: Database; close(): void }> {
  const { db, close } = connectDatabase(url, authToken);
  if (url.startsWith('file:')) {
    // Readers do not block the writer, nor it them (the mode is kept in the file).
    await db.run('PRAGMA journal_mode = WAL');
  }
  // The migrator reads files: loaded only where migrations run (Node), not in a Worker.
  const { migrate } = await import('drizzle-orm/libsql/migrator');
  await migrate(db, { migrationsFolder: (migrations ?? new URL('../../schema/migrations', import.meta.url)).pathname });
  return { db, close };
}
