// The app as both runtimes wire it (a libSQL file in a temp dir); nothing reaches the upstream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createTestApp, type TestApp } from '../setup/app.ts';

let t: TestApp;
before(async () => {
  t = await createTestApp('http://127.0.0.1:9');
});
after(() => t.close());

test('GET /v2/ answers 200 with the API version header', async () => {
  const res = await t.app.request('/v2/');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
});

test('anything else is an OCI UNSUPPORTED error envelope', async () => {
  const res = await t.app.request('/v2/library/alpine/blobs/uploads/', { method: 'POST' });
  assert.equal(res.status, 405);
  assert.deepEqual(await res.json(), { errors: [{ code: 'UNSUPPORTED', message: 'the operation is unsupported', detail: null }] });
});
