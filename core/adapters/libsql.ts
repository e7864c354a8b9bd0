import { createClient } from '@libsql/client';
import { drizzle, type LibSQLDatabase } from 'drizzle-orm/libsql';
import * as schema from '../../schema/index.ts';

export type Database = LibSQLDatabase<typeof schema>;

/**
 * Connects to libSQL without touching its schema: what a Worker does (Turso over
 * `libsql://` or `https://`; `@libsql/client` picks its web build under workerd, which
 * refuses `file:` URLs). Migrations are applied by `openDatabase` or drizzle-kit.
 */
export function connectDatabase(url: string, authToken?: string): { db: Database; close(): void } {
  const client = createClient({ url, authToken, timeout: 5000 });
  return { db: drizzle(client, { schema }), close: () => client.close() };
}

/**
 * Opens libSQL (a local file or Turso) and applies the drizzle migrations in schema/migrations
 * (`migrations` seen from this source file unless given: a bundle passes its own, see workers/node.ts).
 */
export async function openDatabase(url: string, authToken?: string, migrations?: URL): Promise<{ db: Database; close(): void }> {
  const { db, close } = connectDatabase(url, authToken);
  if (url.startsWith('file:')) {
    // Several ingest workers share the file: wait for locks instead of failing.
    await db.run('PRAGMA journal_mode = WAL');
    await db.run('PRAGMA busy_timeout = 5000');
  }
  // The migrator reads files: loaded only where migrations run (Node), not in a Worker.
  const { migrate } = await import('drizzle-orm/libsql/migrator');
  await migrate(db, { migrationsFolder: (migrations ?? new URL('../../schema/migrations', import.meta.url)).pathname });
  return { db, close };
}
