import { test } from 'node:test';
import assert from 'node:assert/strict';
import { workerConfig, type Env } from '../../workers/cloudflare.ts';
import { ConfigError } from '../../core/config.ts';

const queue = { sendBatch: async () => {} };
const base: Env = { INGEST_QUEUE: queue, LIBSQL_URL: 'libsql://db.example.turso.io', S3_BUCKET: 'b', S3_ENDPOINT: 'https://s3.example.com' };

test('a Worker takes Turso over libsql:// or https:// and an S3 bucket, and ignores binding objects', () => {
  const config = workerConfig(base);
  assert.equal(config.libsqlUrl, 'libsql://db.example.turso.io');
  assert.equal(config.s3?.bucket, 'b');
  assert.equal(config.blobDelivery, 'redirect');
  assert.equal(workerConfig({ ...base, LIBSQL_URL: 'https://db.example.turso.io' }).libsqlUrl, 'https://db.example.turso.io');
});

test('a Worker refuses a file database, a missing one, or no bucket, naming the variable', () => {
  const fails = (env: Env, variable: string) =>
    assert.throws(() => workerConfig(env), (e: Error) => e instanceof ConfigError && e.message.startsWith(`${variable}:`), variable);
  fails({ ...base, LIBSQL_URL: 'file:/tmp/x.db' }, 'LIBSQL_URL');
  fails({ ...base, LIBSQL_URL: undefined }, 'LIBSQL_URL');
  fails({ ...base, S3_BUCKET: undefined }, 'S3_BUCKET');
  fails({ ...base, BLOB_DELIVERY: 'teleport' }, 'BLOB_DELIVERY');
});
