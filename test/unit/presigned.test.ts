// Presigned URL reuse (core/registry/presigned.ts): the same URL while more than half its
// lifetime is left, a new one after; per key and content type; bounded by entries.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PresignedUrls } from '../../core/registry/presigned.ts';

function presigner() {
  let signed = 0;
  let now = 1_000_000;
  const calls: string[] = [];
  const urls = new PresignedUrls(
    async (key, ttl, options) => {
      signed++;
      calls.push(`${key} ${ttl} ${options?.contentType ?? ''}`);
      return `https://bucket/${key}?sig=${signed}`;
    },
    () => now,
    300,
    2,
  );
  return { urls, advance: (ms: number) => (now += ms), signed: () => signed, calls };
}

test('a URL is reused while more than half its lifetime is left, then signed again', async () => {
  const p = presigner();
  const first = await p.urls.url('blobs/sha256/a');
  assert.equal(await p.urls.url('blobs/sha256/a'), first);
  p.advance(149_999);
  assert.equal(await p.urls.url('blobs/sha256/a'), first, 'just under half the lifetime');
  p.advance(1);
  const second = await p.urls.url('blobs/sha256/a');
  assert.notEqual(second, first, 'at half the lifetime: signed again');
  assert.equal(p.signed(), 2);
  assert.deepEqual(p.calls, ['blobs/sha256/a 300 ', 'blobs/sha256/a 300 ']);
});

test('per key and content type; the least recently signed goes past the bound', async () => {
  const p = presigner();
  const a = await p.urls.url('k/a');
  const tar = await p.urls.url('k/a', { contentType: 'application/x-tar' });
  assert.notEqual(a, tar);
  await p.urls.url('k/b'); // a third entry: k/a (plain) goes
  assert.equal(p.signed(), 3);
  assert.equal(await p.urls.url('k/a', { contentType: 'application/x-tar' }), tar, 'kept');
  assert.notEqual(await p.urls.url('k/a'), a, 'dropped, signed again');
});
