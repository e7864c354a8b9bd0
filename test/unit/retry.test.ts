// The one retry policy: errors say whether a retry can help; nextStep turns a result into the queue's next step.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, failureOf, nextStep } from '../../core/cache/retry.ts';
import { DigestMismatchError, OciError, TransientError } from '../../core/oci/errors.ts';
import { upstreamError } from '../../core/ports/upstream.ts';

test('a failure is retryable as its error says, and an error that says nothing is retried', () => {
  assert.equal(failureOf(new OciError('LAYER_INVALID', 'bad layer')).retry, false);
  assert.equal(failureOf(new OciError('UNAVAILABLE', 'down', undefined, { retryable: true })).retry, true);
  assert.equal(failureOf(new DigestMismatchError('sha256:a', 'sha256:b')).retry, true, 'a cut transfer may be');
  assert.equal(failureOf(new TransientError('socket hang up')).retry, true);
  assert.equal(failureOf(new Error('ECONNRESET')).retry, true);
  assert.deepEqual(failureOf(new OciError('BLOB_UNKNOWN', 'gone', { digest: 'sha256:a' })), { ok: false, retry: false, error: 'BLOB_UNKNOWN: gone {"digest":"sha256:a"}' });
  assert.equal(failureOf(new Error('fetch https://user:secret@example.com/x failed')).error, 'fetch <url> failed', 'no URL (or what it carries) in a recorded error');
});

test('upstream statuses: transient ones and 429 are retryable, the rest are not', async () => {
  const notFound = new OciError('BLOB_UNKNOWN', 'gone');
  const of = (status: number) => upstreamError(new Response(null, { status }), 'docker.io', notFound);
  for (const status of [408, 429, 500, 502, 503, 504]) assert.equal((await of(status)).retryable, true, String(status));
  for (const status of [400, 401, 403, 404, 405, 416]) assert.equal((await of(status)).retryable, false, String(status));
});

test('nextStep: done, deferred, retried with backoff while attempts remain, dead otherwise', () => {
  assert.deepEqual(nextStep({ ok: true, outcome: 'stored', bytes: 1 }, 1, 5), { ack: 'done' });
  assert.deepEqual(nextStep({ ok: true, outcome: 'deferred', waitMs: 2000, reason: 'x' }, 5, 5), { ack: 'defer', delayMs: 2000 }, 'a wait is not an attempt');
  assert.deepEqual(nextStep({ ok: false, retry: true, error: 'e' }, 1, 5), { ack: 'retry', delayMs: 1000 });
  assert.deepEqual(nextStep({ ok: false, retry: true, error: 'e' }, 3, 5), { ack: 'retry', delayMs: 4000 });
  assert.deepEqual(nextStep({ ok: false, retry: true, error: 'e' }, 5, 5), { ack: 'dead', error: 'e' });
  assert.deepEqual(nextStep({ ok: false, retry: false, error: 'e' }, 1, 5), { ack: 'dead', error: 'e' });
  assert.equal(backoffMs(20), 300_000, 'capped at five minutes');
});
