// The one lease helper, on real timers with short leases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LeaseLostError, whileLeased } from '../../core/cache/lease.ts';

/** Resolves when `signal` aborts, with its reason. */
const aborted = (signal: AbortSignal) => new Promise<unknown>((resolve) => signal.addEventListener('abort', () => resolve(signal.reason), { once: true }));

test('a held lease is renewed every third of its length and the work finishes', async () => {
  let renewals = 0;
  const result = await whileLeased({ what: 'blob', leaseMs: 600, renew: async () => (renewals++, true) }, async (signal) => {
    await new Promise((r) => setTimeout(r, 700));
    assert.equal(signal.aborted, false);
    return 'done';
  });
  assert.equal(result, 'done');
  assert.ok(renewals >= 2, `renewed ${renewals} times`);
});

test('a renewal that finds another owner aborts the work with LeaseLostError', async () => {
  const reason = await whileLeased({ what: 'layer', leaseMs: 600, renew: async () => false }, (signal) => aborted(signal));
  assert.ok(reason instanceof LeaseLostError);
  assert.match((reason as Error).message, /lost the layer lease: another owner has it/);
  assert.equal((reason as LeaseLostError).retryable, true);
});

test('renewals that keep failing abort the work once the lease would have run out, not before', async () => {
  const started = performance.now();
  let failures = 0;
  const reason = await whileLeased({ what: 'job', leaseMs: 600, renew: async () => (failures++, Promise.reject(new Error('database unreachable'))) }, (signal) => aborted(signal));
  assert.ok(reason instanceof LeaseLostError);
  assert.match((reason as Error).message, /could not be renewed before it ran out/);
  assert.ok(failures >= 2, 'a failed renewal is tried again first');
  assert.ok(performance.now() - started >= 600, 'not before the lease ran out');
});

test("the caller's own signal (an outer lease) aborts the work too, and renewals stop with the work", async () => {
  const outer = new AbortController();
  let renewals = 0;
  const work = whileLeased({ what: 'blob', leaseMs: 600, renew: async () => (renewals++, true), signal: outer.signal }, (signal) => aborted(signal));
  outer.abort(new Error('job lease lost'));
  assert.equal(((await work) as Error).message, 'job lease lost');
  const after = renewals;
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(renewals, after, 'no renewal after the work ended');
});
