import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseConfig, ConfigError } from '../../core/config.ts';

test('defaults: port 5000, ./data, filesystem store streaming, docker.io default upstream', () => {
  const c = parseConfig({});
  assert.equal(c.port, 5000);
  assert.equal(c.libsqlUrl, 'file:./data/pullthrough.db');
  assert.equal(c.blobDelivery, 'stream');
  assert.equal(c.s3, undefined);
  assert.equal(c.upstreams['docker.io']?.url, 'https://registry-1.docker.io');
});

test('PUBLIC_URL: unset by default, a prefix without trailing slash when set', () => {
  assert.equal(parseConfig({}).publicUrl, undefined);
  assert.equal(parseConfig({ PUBLIC_URL: 'https://mirror.example.com/' }).publicUrl, 'https://mirror.example.com');
  assert.equal(parseConfig({ PUBLIC_URL: 'https://example.com/pullthrough/' }).publicUrl, 'https://example.com/pullthrough');
});

test('UPSTREAMS merges over the defaults', () => {
  const c = parseConfig({ UPSTREAMS: '{"docker.io":{"url":"http://127.0.0.1:5100"}}', S3_BUCKET: 'b' });
  assert.equal(c.upstreams['docker.io']?.url, 'http://127.0.0.1:5100');
  assert.equal(c.upstreams['ghcr.io']?.url, 'https://ghcr.io');
  assert.equal(c.blobDelivery, 'redirect');
});

test('every bad variable is named in the error', () => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ PORT: 'eighty' }, 'PORT'],
    [{ UPSTREAMS: '{' }, 'UPSTREAMS'],
    [{ UPSTREAMS: '{"x.io":{"url":"ftp://x"}}' }, 'UPSTREAMS'],
    [{ BLOB_DELIVERY: 'redirect' }, 'BLOB_DELIVERY'],
    [{ S3_BUCKET: 'b', S3_ACCESS_KEY_ID: 'k' }, 'S3_SECRET_ACCESS_KEY'],
    [{ INGEST_PART_SIZE_BYTES: '1024' }, 'INGEST_PART_SIZE_BYTES'],
    [{ TLS_CERT: 'c.pem' }, 'TLS_KEY'],
    [{ LIBSQL_URL: 'mysql://x' }, 'LIBSQL_URL'],
    [{ PUBLIC_URL: 'mirror.example.com' }, 'PUBLIC_URL'],
    [{ PUBLIC_URL: 'ftp://mirror.example.com' }, 'PUBLIC_URL'],
    [{ PUBLIC_URL: 'https://mirror.example.com/?x=1' }, 'PUBLIC_URL'],
  ];
  for (const [env, variable] of cases) {
    assert.throws(() => parseConfig(env), (e: unknown) => e instanceof ConfigError && e.message.startsWith(`${variable}:`), variable);
  }
});

test('configuration errors never echo secrets', () => {
  assert.throws(() => parseConfig({ UPSTREAMS: '{"r.io":{"url":"https://r.io","password":"hunter2"}}' }), (e: Error) => !e.message.includes('hunter2'));
});
