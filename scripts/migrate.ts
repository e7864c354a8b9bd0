// `npm run db:migrate`: applies schema/migrations to the database at LIBSQL_URL (Turso
// for a Workers deployment; Node applies them itself at start). Idempotent.
import { openDatabase } from '../core/adapters/libsql.ts';

const url = process.env.LIBSQL_URL;
if (!url) {
  console.error('LIBSQL_URL: set it to the database to migrate (e.g. libsql://<db>-<org>.turso.io)');
  process.exit(2);
}
const { close } = await openDatabase(url, process.env.LIBSQL_AUTH_TOKEN || undefined);
close();
console.log('migrations applied');
