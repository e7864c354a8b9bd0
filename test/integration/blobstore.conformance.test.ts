// One BlobStore suite, run against every driver on real storage: the local filesystem
// and S3 on the Ceph RGW that test/run.sh starts (S3_TEST_* variables).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ListMultipartUploadsCommand } from '@aws-sdk/client-s3';
import { digestOf } from '../../core/oci/digest.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { S3BlobStore } from '../../core/adapters/s3-store.ts';
import { s3TestBucket } from '../setup/s3.ts';
import type { BlobStore } from '../../core/ports/blob-store.ts';

const PART = 5 * 1024 * 1024;

function streamOf(bytes: Uint8Array, chunk = 64 * 1024): ReadableStream<Uint8Array> {
  let offset = 0;
  return new ReadableStream({
    pull(c) {
      if (offset >= bytes.length) return c.close();
      c.enqueue(bytes.subarray(offset, offset + chunk));
      offset += chunk;
    },
  });
}

async function read(s: ReadableStream<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}

interface Driver {
  name: string;
  make(): Promise<BlobStore>;
  openUploads?(key: string): Promise<number>;
}

const fsRoot = await mkdtemp(join(tmpdir(), 'pt-fs-'));
after(() => rm(fsRoot, { recursive: true, force: true }));
const drivers: Driver[] = [{ name: 'filesystem', make: async () => new FilesystemBlobStore(fsRoot) }];

const s3 = await s3TestBucket('conformance');
if (s3) {
  const { client, bucket } = s3;
  drivers.push({
    name: 's3 (Ceph RGW)',
    make: async () => new S3BlobStore(client, { bucket, partSizeBytes: PART, queueSize: 2 }),
    async openUploads(key) {
      const page = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: key }));
      return (page.Uploads ?? []).filter((u) => u.Key === key).length;
    },
  });
}

for (const driver of drivers) {
  describe(`BlobStore conformance: ${driver.name}`, () => {
    let store: BlobStore;
    before(async () => {
      store = await driver.make();
    });

    test('list yields the objects under a prefix in key order, with sizes, and nothing of an unfinished or refused put', async () => {
      const prefix = `list-${randomBytes(4).toString('hex')}/`;
      const keys = [`${prefix}b/2`, `${prefix}a/1`, `${prefix}a/10`, `${prefix}c`];
      for (const [i, key] of keys.entries()) await store.put(key, streamOf(Buffer.alloc(i + 1, i)));
      const refused = store.put(`${prefix}z`, streamOf(Buffer.from('bad')), { expected: { digest: digestOf(Buffer.from('good')) } });
      await assert.rejects(refused);
      await store.put(`other-${prefix}x`, streamOf(Buffer.from('x')));
      const before = Date.now() - 60_000;
      const listed = [];
      for await (const o of store.list(prefix)) listed.push(o);
      assert.deepEqual(
        listed.map((o) => [o.key, o.size]),
        [
          [`${prefix}a/1`, 2],
          [`${prefix}a/10`, 3],
          [`${prefix}b/2`, 1],
          [`${prefix}c`, 4],
        ],
      );
      assert.ok(listed.every((o) => o.modifiedAt > before && o.modifiedAt < Date.now() + 60_000), 'modification times are real');
      const none = [];
      for await (const o of store.list(`${prefix}nothing/`)) none.push(o);
      assert.deepEqual(none, []);
    });

    test('a missing key stats and reads as undefined, and deletes quietly', async () => {
      const key = `blobs/sha256/${'0'.repeat(64)}`;
      assert.equal(await store.stat(key), undefined);
      assert.equal(await store.get(key), undefined);
      await store.delete(key);
    });

    test('put with a matching digest stores the exact bytes (multipart-sized)', async () => {
      const bytes = randomBytes(PART * 2 + 12345);
      const digest = digestOf(bytes);
      const key = `blobs/sha256/${digest.slice(7)}`;
      assert.deepEqual(await store.put(key, streamOf(bytes), { expected: { digest, size: bytes.length } }), { size: bytes.length });
      assert.deepEqual(await store.stat(key), { size: bytes.length });
      const got = await store.get(key);
      assert.equal(got?.length, bytes.length);
      assert.ok((await read(got!.body)).equals(bytes));
    });

    test('ranges return exactly the requested bytes', async () => {
      const bytes = randomBytes(1000);
      const digest = digestOf(bytes);
      const key = `blobs/sha256/${digest.slice(7)}`;
      await store.put(key, streamOf(bytes, 100), { expected: { digest } });
      const got = await store.get(key, { start: 10, end: 19 });
      assert.equal(got?.length, 10);
      assert.ok((await read(got!.body)).equals(bytes.subarray(10, 20)));
    });

    test('a digest mismatch stores nothing under the key and leaves no open upload', async () => {
      const claimed = randomBytes(PART + 10);
      const served = Buffer.from(claimed);
      served[served.length - 1]! ^= 0xff;
      const digest = digestOf(claimed);
      const key = `blobs/sha256/${digest.slice(7)}`;
      await assert.rejects(store.put(key, streamOf(served), { expected: { digest } }), { code: 'UPSTREAM_INVALID' });
      assert.equal(await store.stat(key), undefined);
      if (driver.openUploads) assert.equal(await driver.openUploads(key), 0);
    });

    test('a size overrun stores nothing', async () => {
      const bytes = randomBytes(2048);
      const digest = digestOf(bytes);
      const key = `blobs/sha256/${digest.slice(7)}`;
      await assert.rejects(store.put(key, streamOf(bytes), { expected: { digest, size: 1024 } }), /size does not match/);
      assert.equal(await store.stat(key), undefined);
    });

    test('a source that breaks mid-stream stores nothing', async () => {
      const key = `blobs/sha256/${'b'.repeat(64)}`;
      let sent = 0;
      const broken = new ReadableStream<Uint8Array>({
        pull(c) {
          if (sent >= PART + 1024) return c.error(new Error('upstream cut the connection'));
          c.enqueue(randomBytes(64 * 1024));
          sent += 64 * 1024;
        },
      });
      await assert.rejects(store.put(key, broken, { expected: { digest: `sha256:${'b'.repeat(64)}` } }), /cut the connection/);
      assert.equal(await store.stat(key), undefined);
      if (driver.openUploads) assert.equal(await driver.openUploads(key), 0);
    });

    test('delete removes the object', async () => {
      const bytes = randomBytes(10);
      const digest = digestOf(bytes);
      const key = `blobs/sha256/${digest.slice(7)}`;
      await store.put(key, streamOf(bytes), { expected: { digest } });
      await store.delete(key);
      assert.equal(await store.stat(key), undefined);
    });

    test('presign gives a URL that serves the object, where the backend has one', async () => {
      const bytes = randomBytes(100);
      const digest = digestOf(bytes);
      const key = `blobs/sha256/${digest.slice(7)}`;
      await store.put(key, streamOf(bytes), { expected: { digest } });
      const url = await store.presign(key, 60);
      if (driver.name === 'filesystem') return assert.equal(url, undefined);
      assert.ok(url);
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(bytes));
    });
  });
}
