// The Hrana test server (test infrastructure for the Workers build) against the real
// `@libsql/client` over HTTP: drizzle migrations, the job queue, transactions, values
// of every type, and the auth token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from '@libsql/client';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { startHranaServer, type HranaServer } from '../setup/hrana-server.ts';

const run = promisify(execFile);
let dir: string;
let server: HranaServer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-hrana-'));
  server = await startHranaServer(join(dir, 'db.sqlite'));
});
after(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('drizzle migrations and the job queue run over HTTP', async () => {
  const { db, close } = await openDatabase(server.url, server.authToken);
  try {
    const queue = new LibsqlJobQueue(db);
    await queue.send([{ kind: 'ingest', digest: 'a' }]);
    await queue.send([{ kind: 'ingest', digest: 'a' }]);
    const job = await queue.claim('w1', 10_000);
    assert.equal(job?.key, 'ingest:a');
    assert.equal(await queue.claim('w2', 10_000), undefined, 'one live job per key, claimed once');
    await queue.complete(job!.id, 'w1');
  } finally {
    close();
  }
  // A second open finds the migrations applied.
  const again = await openDatabase(server.url, server.authToken);
  again.close();
});

test('npm run db:migrate applies the migrations to a database over HTTP, as to Turso', async () => {
  const target = await startHranaServer(join(dir, 'migrate.sqlite'));
  try {
    const { stdout } = await run('npm', ['run', '-s', 'db:migrate'], { env: { ...process.env, LIBSQL_URL: target.url, LIBSQL_AUTH_TOKEN: target.authToken } });
    assert.match(stdout, /migrations applied/);
    const client = createClient({ url: target.url, authToken: target.authToken });
    const tables = (await client.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")).rows.map((r) => r.name);
    client.close();
    for (const table of ['blobs', 'jobs', 'manifest_blobs', 'manifests', 'repositories', 'tags']) assert.ok(tables.includes(table), table);
  } finally {
    await target.stop();
  }
});

test('values round-trip, transactions commit and roll back, and the token is required', async () => {
  const client = createClient({ url: server.url, authToken: server.authToken, intMode: 'bigint' });
  try {
    await client.execute('CREATE TABLE v (i INTEGER, f REAL, t TEXT, b BLOB, n)');
    await client.execute({ sql: 'INSERT INTO v VALUES (?, ?, ?, ?, ?)', args: [9007199254740993n, 2.5, 'text', new Uint8Array([0, 255]), null] });
    const row = (await client.execute('SELECT * FROM v')).rows[0]!;
    assert.equal(row.i, 9007199254740993n);
    assert.equal(row.f, 2.5);
    assert.equal(row.t, 'text');
    assert.deepEqual(new Uint8Array(row.b as ArrayBuffer), new Uint8Array([0, 255]));
    assert.equal(row.n, null);

    const rolledBack = await client.transaction('write');
    await rolledBack.execute("INSERT INTO v (t) VALUES ('gone')");
    await rolledBack.rollback();
    const committed = await client.transaction('write');
    await committed.execute("INSERT INTO v (t) VALUES ('kept')");
    await committed.commit();
    const texts = (await client.execute('SELECT t FROM v ORDER BY rowid')).rows.map((r) => r.t);
    assert.deepEqual(texts, ['text', 'kept']);

    const batch = await client.batch([{ sql: 'INSERT INTO v (t) VALUES (?)', args: ['b1'] }, 'SELECT count(*) AS c FROM v'], 'write');
    assert.equal(batch[1]!.rows[0]!.c, 3n);
    await assert.rejects(client.execute('SELECT * FROM missing_table'), /no such table/);
  } finally {
    client.close();
  }
  const stranger = createClient({ url: server.url, authToken: 'wrong' });
  await assert.rejects(stranger.execute('SELECT 1'));
  stranger.close();
});
