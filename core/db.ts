import { createClient } from '@libsql/client';
import { drizzle, type LibSQLDatabase } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import * as schema from '../schema/index.ts';

export type Database = LibSQLDatabase<typeof schema>;

/** Opens libSQL (a local file or Turso) and applies the drizzle migrations in schema/migrations. */
export async function openDatabase(url: string, authToken?: string): Promise<{ db: Database; close(): void }> {
  const client = createClient({ url, authToken });
  if (url.startsWith('file:')) {
    // Several ingest workers share the file: wait for locks instead of failing.
    await client.execute('PRAGMA journal_mode = WAL');
    await client.execute('PRAGMA busy_timeout = 5000');
  }
  const db = drizzle(client, { schema });
  await migrate(db, { migrationsFolder: new URL('../schema/migrations', import.meta.url).pathname });
  return { db, close: () => client.close() };
}
