import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createApp } from '../../functions/app.ts';

test('GET /v2/ answers 200 with the API version header', async () => {
  const res = await createApp().request('/v2/');
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('docker-distribution-api-version'), 'registry/2.0');
});

test('anything else is an OCI UNSUPPORTED error envelope', async () => {
  const res = await createApp().request('/v2/library/alpine/blobs/uploads/', { method: 'POST' });
  assert.equal(res.status, 405);
  assert.deepEqual(await res.json(), { errors: [{ code: 'UNSUPPORTED', message: 'the operation is unsupported', detail: null }] });
});
