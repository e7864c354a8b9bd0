import { test } from 'node:test';
import assert from 'node:assert/strict';
import { workerConfig, type Env } from '../../workers/cloudflare.ts';
import { ConfigError } from '../../core/config.ts';

const queue = { sendBatch: async () => {} };
const base: Env = { INGEST_QUEUE: queue, LIBSQL_URL: 'libsql://db.example.turso.io', S3_BUCKET: 'b', S3_ENDPOINT: 'https://s3.example.com', AUTH_RULES: 'pull docker.io/** to anonymous' };

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

test('a Worker refuses to serve without AUTH_RULES, and with users but no shared token keys', () => {
  const fails = (env: Env, variable: string) =>
    assert.throws(() => workerConfig(env), (e: Error) => e instanceof ConfigError && e.message.startsWith(`${variable}:`), variable);
  fails({ ...base, AUTH_RULES: undefined }, 'AUTH_RULES');
  fails({ ...base, AUTH_RULES: '' }, 'AUTH_RULES');
  const users = JSON.stringify({ alice: `pbkdf2-sha256$100000$${'A'.repeat(22)}$${'B'.repeat(43)}` });
  fails({ ...base, AUTH_USERS: users }, 'AUTH_TOKEN_KEYS');
  const keyed = workerConfig({ ...base, AUTH_USERS: users, AUTH_TOKEN_KEYS: `k1:${'C'.repeat(43)}` });
  assert.deepEqual(keyed.auth.keys.map((k) => k.id), ['k1']);
  assert.equal(keyed.coldRatePerMinute, 120, 'the cold-work limit is on by default on Workers');
  assert.equal(workerConfig({ ...base, COLD_RATE_PER_MINUTE: '0' }).coldRatePerMinute, 0);
});
