// The libSQL job queue beyond the shared suite (job-queue.conformance.test.ts): leases, backoff,
// re-arming and release, on a real libSQL database file with a controlled clock.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase, type Database } from '../../core/adapters/libsql.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { backoffMs, nextStep } from '../../core/cache/retry.ts';
import type { JobMessage } from '../../core/ports/job-queue.ts';

let dir: string;
let db: Database;
let close: () => void;
let now = 1_000_000;
let queue: LibsqlJobQueue;
const msg = (digest: string): JobMessage => ({ kind: 'ingest', digest });

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-jobs-'));
  ({ db, close } = await openDatabase(`file:${join(dir, 'q.db')}`));
  queue = new LibsqlJobQueue(db, () => now);
});
afterEach(async () => {
  close();
  await rm(dir, { recursive: true, force: true });
});

test('enqueueing the same key twice makes one job, and only one worker claims it', async () => {
  await queue.send([msg('a'), msg('a')]);
  const first = await queue.claim('w1', 10_000);
  assert.equal(first?.key, 'ingest:a');
  assert.deepEqual(JSON.parse(first!.payload), { digest: 'a' });
  assert.equal(first?.attempts, 1);
  assert.equal(await queue.claim('w2', 10_000), undefined);
  await queue.send([msg('a')]);
  assert.equal(await queue.claim('w2', 10_000), undefined, 'a running job is not duplicated');
});

test('a crashed worker’s job is claimed again when its lease runs out', async () => {
  await queue.send([msg('b')]);
  const job = await queue.claim('dead', 5_000);
  now += 5_001;
  const again = await queue.claim('w2', 5_000);
  assert.equal(again?.id, job?.id);
  assert.equal(again?.attempts, 2);
  assert.equal(await queue.renew(job!.id, 'dead', 5_000), false, 'the old owner has lost it');
  assert.equal(await queue.renew(job!.id, 'w2', 5_000), true);
});

test('failures back off, then end as failed with the error recorded', async () => {
  await queue.send([msg('c')]);
  const job = (await queue.claim('w', 1000))!;
  const failure = { ok: false, retry: true, error: 'upstream 503' } as const;
  assert.deepEqual(nextStep(failure, job.attempts, 2), { ack: 'retry', delayMs: backoffMs(1) });
  await queue.retry(job.id, 'w', 'upstream 503', backoffMs(1));
  assert.equal(await queue.claim('w', 1000), undefined, 'not before the backoff');
  now += backoffMs(1);
  const second = (await queue.claim('w', 1000))!;
  assert.equal(second.attempts, 2);
  assert.deepEqual(nextStep({ ...failure, error: 'upstream 503 again' }, second.attempts, 2), { ack: 'dead', error: 'upstream 503 again' });
  await queue.fail(second.id, 'w', 'upstream 503 again');
  now += 1_000_000;
  assert.equal(await queue.claim('w', 1000), undefined);
  const [row] = await db.query.jobs.findMany();
  assert.equal(row?.state, 'failed');
  assert.equal(row?.lastError, 'upstream 503 again');
});

test('a finished key can be enqueued again', async () => {
  await queue.send([msg('d')]);
  const job = (await queue.claim('w', 1000))!;
  await queue.complete(job.id, 'w');
  await queue.send([msg('d')]);
  const again = await queue.claim('w', 1000);
  assert.equal(again?.id, job.id);
  assert.equal(again?.attempts, 1);
});
