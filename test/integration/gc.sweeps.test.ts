// Garbage collection's sweeps (core/cache/gc.ts) on real stores: the filesystem store's
// temporaries, Ceph RGW's staging chunks and multipart uploads, dead processes' spool
// entries and old done jobs; objects under final keys that no row serves (orphans), never
// one a ready row holds. One run at a time
// (the lease); `POST /api/gc` behind the admin grant; `pullthrough gc` over HTTP.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateMultipartUploadCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, UploadPartCommand } from '@aws-sdk/client-s3';
import { createTestApp } from '../setup/app.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { S3BlobStore } from '../../core/adapters/s3-store.ts';
import { runGc, DAY_MS } from '../../core/cache/gc.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { buildCli } from '../../scripts/build.ts';
import { startServer } from '../setup/server.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-gc-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const old = async (path: string, bytes: number) => {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, randomBytes(bytes));
  const then = new Date(Date.now() - 2 * DAY_MS);
  await utimes(path, then, then);
};
const exists = (path: string) => stat(path).then(() => true, () => false);

/** A blob row for `hex` in the test app's catalog: ready, or evicted (its object to go). */
async function blobRow(t: Awaited<ReturnType<typeof createTestApp>>, hex: string, state: 'ready' | 'evicted', size: number) {
  const catalog = t.deps.gc.catalog;
  const digest = `sha256:${hex}`;
  const now = t.deps.gc.clock();
  await catalog.recordBlob({ digest, upstream: 'docker.io', name: 'library/kept', size, storageKey: `blobs/sha256/${hex}` }, now);
  await catalog.claim('blob', digest, 'writer', 10_000, now);
  await catalog.blobStored(digest, 'writer', size, now);
  if (state === 'evicted') {
    await catalog.beginEviction('blob', digest, 'gc-killed', 1, now, now);
    await catalog.endEviction('blob', digest, 'gc-killed', now);
  }
}

test('filesystem store: temporaries and stagings a day old, dead processes\' spool entries, done jobs a week old and orphans go; fresh ones and what a row holds stay; a dry run removes nothing', async () => {
  const t = await createTestApp('http://127.0.0.1:9');
  try {
    const store = join(t.dir, 'store');
    await old(join(store, '.tmp', 'crashed-upload'), 1000);
    await old(join(store, '.staging', `blobs_sha256_${'a'.repeat(64)}`), 2000);
    await writeFile(join(store, '.tmp', 'in-flight'), 'fresh');
    // Under final keys: a ready blob's object stays; one no row names, an evicted blob's
    // (an eviction killed before its delete), a manifest and a layer no row names go; a
    // fresh one with no row stays (its writer may be about to record it).
    await old(join(store, 'blobs', 'sha256', 'e'.repeat(64)), 310);
    await blobRow(t, 'e'.repeat(64), 'ready', 310);
    await old(join(store, 'blobs', 'sha256', 'f'.repeat(64)), 320);
    await blobRow(t, 'f'.repeat(64), 'evicted', 320);
    await old(join(store, 'blobs', 'sha256', 'b'.repeat(64)), 300);
    await old(join(store, 'manifests', 'sha256', '7'.repeat(64)), 30);
    await old(join(store, 'layers', 'sha256', '8'.repeat(64), 'layer.tar'), 3000);
    await mkdir(join(store, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(store, 'blobs', 'sha256', '1'.repeat(64)), 'fresh');
    // A spool entry of a process of this host that is gone (pid 2^22+1 is never alive).
    const deadSpool = join(t.dir, 'spool', `${hostname().replace(/[^A-Za-z0-9.-]/g, '_')}-4194305`);
    await old(join(deadSpool, 'sha256-abc'), 400);
    const queue = new LibsqlJobQueue(t.db, () => Date.now() - 8 * DAY_MS);
    await queue.send([{ kind: 'ingest', digest: `sha256:${'c'.repeat(64)}` }]);
    const job = await queue.claim('test', 60_000);
    await queue.complete(job!.id, 'test');

    const dry = await runGc(t.deps.gc, { dryRun: true, owner: 'test-dry' });
    assert.equal(dry.ran, true);
    assert.deepEqual(dry.totals, { orphan: { count: 4, bytes: 320 + 300 + 30 + 3000 }, temporary: { count: 1, bytes: 1000 }, staging: { count: 1, bytes: 2000 }, spool: { count: 1, bytes: 400 } });
    assert.equal(dry.doneJobs, 1);
    assert.equal(await exists(join(store, '.tmp', 'crashed-upload')), true, 'a dry run removes nothing');
    assert.equal(await exists(join(deadSpool, 'sha256-abc')), true);

    const run = await runGc(t.deps.gc, { owner: 'test' });
    assert.deepEqual(run.totals, dry.totals);
    assert.equal(run.doneJobs, 1);
    assert.deepEqual(run.items.map((i) => i.kind).sort(), ['orphan', 'orphan', 'orphan', 'orphan', 'spool', 'staging', 'temporary']);
    assert.equal(await exists(join(store, '.tmp', 'crashed-upload')), false);
    assert.equal(await exists(join(store, '.staging', `blobs_sha256_${'a'.repeat(64)}`)), false);
    assert.equal(await exists(join(deadSpool, 'sha256-abc')), false);
    assert.equal(await exists(join(store, '.tmp', 'in-flight')), true, 'fresh temporaries stay');
    assert.equal(await exists(join(store, 'blobs', 'sha256', 'e'.repeat(64))), true, 'a ready blob\'s object stays');
    assert.equal(await exists(join(store, 'blobs', 'sha256', '1'.repeat(64))), true, 'a fresh object stays');
    for (const gone of [join('blobs', 'sha256', 'b'.repeat(64)), join('blobs', 'sha256', 'f'.repeat(64)), join('manifests', 'sha256', '7'.repeat(64)), join('layers', 'sha256', '8'.repeat(64), 'layer.tar')]) {
      assert.equal(await exists(join(store, gone)), false, `${gone} swept`);
    }
    const evicted = await t.deps.gc.catalog.blob(`sha256:${'f'.repeat(64)}`);
    assert.deepEqual([evicted?.state, evicted?.leaseOwner], ['evicted', null], 'the evicted row stays, its lease given back');
    assert.equal((await t.deps.gc.catalog.blob(`sha256:${'e'.repeat(64)}`))?.state, 'ready');
    const again = await runGc(t.deps.gc, { owner: 'test-again' });
    assert.deepEqual([again.totals, again.doneJobs], [{}, 0], 'nothing left the second time');
  } finally {
    await t.close();
  }
});

test('two runs at once: one does the work, the other reports the lease held', async () => {
  const t = await createTestApp('http://127.0.0.1:9');
  try {
    await old(join(t.dir, 'store', '.tmp', 'x'), 10);
    const [a, b] = await Promise.all([runGc(t.deps.gc, { owner: 'a' }), runGc(t.deps.gc, { owner: 'b' })]);
    assert.deepEqual([a.ran, b.ran].sort(), [false, true]);
    const worked = a.ran ? a : b;
    assert.deepEqual(worked.totals, { temporary: { count: 1, bytes: 10 } });
    assert.equal((await runGc(t.deps.gc, { owner: 'c' })).ran, true, 'the lease is released after a run');
  } finally {
    await t.close();
  }
});

test('Ceph RGW: staging chunks and follower announcements a day old are deleted, multipart uploads a day old aborted, an orphan under a final key deleted; a ready blob\'s object stays', async (ctx) => {
  const s3 = await s3TestBucket('gc');
  if (!s3) return ctx.skip('needs Ceph RGW (npm test starts it)');
  const store = new S3BlobStore(s3.client, { bucket: s3.bucket, partSizeBytes: 5 * 1024 * 1024, queueSize: 2 });
  const t = await createTestApp('http://127.0.0.1:9', 60, undefined, { store, spool: false });
  try {
    const key = `blobs/sha256/${'d'.repeat(64)}`;
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: key, Body: 'final' }));
    await blobRow(t, 'd'.repeat(64), 'ready', 5);
    const orphan = `blobs/sha256/${'9'.repeat(64)}`;
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: orphan, Body: 'orphan!' }));
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `_staging/${key}/0`, Body: randomBytes(1234) }));
    await s3.client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: `_staging/${key}/follower-x`, Body: '' }));
    const upload = await s3.client.send(new CreateMultipartUploadCommand({ Bucket: s3.bucket, Key: key }));
    await s3.client.send(new UploadPartCommand({ Bucket: s3.bucket, Key: key, UploadId: upload.UploadId, PartNumber: 1, Body: randomBytes(4321) }));
    // Nothing is a day old yet: nothing goes.
    assert.deepEqual((await runGc(t.deps.gc, { owner: 'early' })).totals, {});
    t.advance(DAY_MS + 60_000);
    const dry = await runGc(t.deps.gc, { dryRun: true, owner: 'dry' });
    assert.deepEqual(dry.totals, { orphan: { count: 1, bytes: 7 }, staging: { count: 2, bytes: 1234 }, upload: { count: 1, bytes: 4321 } });
    assert.equal((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads?.length, 1, 'a dry run aborts nothing');
    const run = await runGc(t.deps.gc, { owner: 'run' });
    assert.deepEqual(run.totals, dry.totals);
    assert.equal((await s3.client.send(new ListMultipartUploadsCommand({ Bucket: s3.bucket }))).Uploads?.length ?? 0, 0);
    const keys = ((await s3.client.send(new ListObjectsV2Command({ Bucket: s3.bucket }))).Contents ?? []).map((o) => o.Key);
    assert.deepEqual(keys, [key], 'only the ready blob\'s object is left');
  } finally {
    await t.close();
  }
});

test('POST /api/gc needs the admin grant; `pullthrough gc --dry-run` prints what a run would remove and what it frees', async () => {
  const password = 'operator-pass-1';
  const server = await startServer({
    DATA_DIR: join(dir, 'server'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: 'http://127.0.0.1:9' } }),
    AUTH_USERS: JSON.stringify({ op: await hashPassword(password) }),
    AUTH_RULES: 'admin to op; pull docker.io/** to anonymous',
  });
  try {
    await old(join(dir, 'server', 'store', '.tmp', 'left-behind'), 2048);
    const anonymous = await fetch(`${server.url}/api/gc`, { method: 'POST' });
    assert.equal(anonymous.status, 401);
    const cli = await buildCli();
    const gc = (args: string[], env: Record<string, string>) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [cli, 'gc', ...args, '--server', server.url], { env: { ...process.env, ...env } }, (error, stdout, stderr) =>
          resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
        ),
      );
    const refused = await gc(['--dry-run'], {});
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /401.*UNAUTHORIZED/);
    const dry = await gc(['--dry-run'], { PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: password });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would remove 1 temporary \(2\.0 kB\)/);
    assert.match(dry.stdout, /\.tmp\/left-behind/);
    assert.equal(await exists(join(dir, 'server', 'store', '.tmp', 'left-behind')), true);
    const run = await gc([], { PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: password });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /removed 1 temporary \(2\.0 kB\)/);
    assert.equal(await exists(join(dir, 'server', 'store', '.tmp', 'left-behind')), false);
    assert.deepEqual(await readdir(join(dir, 'server', 'store', '.tmp')), []);
  } finally {
    await server.stop();
  }
});
