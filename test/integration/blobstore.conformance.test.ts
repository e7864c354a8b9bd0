// One BlobStore suite, run against every driver on real storage: the local filesystem
// and S3 on the Ceph RGW that test/run.sh starts (S3_TEST_* variables).
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ListMultipartUploadsCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { digestOf } from '../../core/oci/digest.ts';
import { FilesystemBlobStore } from '../../core/adapters/fs-store.ts';
import { S3BlobStore, STAGING_PREFIX } from '../../core/adapters/s3-store.ts';
import { s3TestBucket } from '../setup/s3.ts';
import { until } from '../setup/process.ts';
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

/** A writer's local copy of what it appends (Node's spool), for `StagingOptions.replay`. */
const replayOf = (bytes: Uint8Array) =>
  async function* (start: number, end: number) {
    yield bytes.subarray(start, end);
  };

interface Driver {
  name: string;
  make(): Promise<BlobStore>;
  openUploads?(key: string): Promise<number>;
  /** Temporary objects the driver keeps for `key` (S3: under _staging/). */
  staged?(key: string): Promise<string[]>;
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
    async staged(key) {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${STAGING_PREFIX}${key}/` }));
      return (page.Contents ?? []).map((o) => o.Key!);
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

    test('staging: bytes appended are readable by a second handle (another process) as they land, and not listed or visible under the key', async () => {
      const key = `blobs/sha256/${randomBytes(32).toString('hex')}`;
      const bytes = randomBytes(2 * PART + 12345);
      const writer = store.staging(key);
      assert.equal(await writer.open(), 0);
      for (let at = 0; at < bytes.length; at += 100_000) await writer.append(bytes.subarray(at, at + 100_000));
      const reader = store.staging(key);
      // A file is readable at once; chunk objects a part at a time, as each upload lands.
      if (writer.immediate) assert.equal(await reader.length(), bytes.length);
      else await until(async () => (await reader.length()) === 2 * PART, 10_000, 'two chunks to land');
      assert.ok((await read((await reader.read(PART - 10, PART + 10))!)).equals(bytes.subarray(PART - 10, PART + 10)), 'a read across two chunks');
      assert.equal(await store.stat(key), undefined, 'nothing under the key before the commit');
      const listed = [];
      for await (const o of store.list('')) if (o.key.includes(key.slice(13))) listed.push(o.key);
      assert.deepEqual(listed, []);
      await writer.commit('application/octet-stream');
      assert.deepEqual(await store.stat(key), { size: bytes.length });
      assert.ok((await read((await store.get(key))!.body)).equals(bytes), 'the composed object is the bytes appended');
      assert.ok((await read((await reader.read(bytes.length - 5, bytes.length))!)).equals(bytes.subarray(-5)), 'a reader after the commit reads the published object');
      assert.equal(await store.staging(key).length(), 0, 'the staging is gone');
      if (driver.openUploads) assert.equal(await driver.openUploads(key), 0);
      await Promise.all([writer.close(), reader.close()]);
      await store.delete(key);
    });

    test('staging: a writer that stops leaves what landed; the next writer takes it over, truncates or appends, and discard removes it', async () => {
      const key = `blobs/sha256/${randomBytes(32).toString('hex')}`;
      const bytes = randomBytes(PART + 1000);
      const first = store.staging(key);
      await first.open();
      await first.append(bytes.subarray(0, PART + 500));
      if (!first.immediate) await until(async () => first.readable === PART, 10_000, 'the first chunk to land');
      // The first writer is gone (a crash): no commit, no close.
      const second = store.staging(key);
      const durable = await second.open();
      assert.equal(durable, first.immediate ? PART + 500 : PART, 'the durable offset: the file, or whole chunks');
      assert.ok((await read((await second.read(0, durable))!)).equals(bytes.subarray(0, durable)));
      await second.append(bytes.subarray(durable));
      await second.commit();
      assert.ok((await read((await store.get(key))!.body)).equals(bytes));
      await store.delete(key);

      const third = store.staging(key);
      await third.open();
      await third.append(bytes);
      await third.commit();
      await store.delete(key);
      const fourth = store.staging(key);
      await fourth.open();
      await fourth.append(bytes);
      // A file truncates anywhere; chunk objects only at a chunk boundary.
      if (fourth.immediate) {
        await fourth.truncate(7);
        assert.equal(fourth.readable, 7);
      } else {
        await assert.rejects(fourth.truncate(7), /cannot truncate/);
      }
      await fourth.truncate(0);
      assert.equal(fourth.readable, 0);
      await fourth.append(Buffer.from('x'));
      await fourth.discard();
      assert.equal(await store.staging(key).length(), 0);
      assert.equal(await store.stat(key), undefined);
      await Promise.all([first.close(), second.close(), third.close(), fourth.close()]);
    });

    test('staging: reads of the writer\'s own handle at once, while it commits and after, each get exactly the bytes asked for (a Worker\'s clients of one transfer)', async () => {
      const key = `blobs/sha256/${randomBytes(32).toString('hex')}`;
      const bytes = randomBytes(4 * PART + 333);
      const writer = store.staging(key);
      await writer.open();
      for (let at = 0; at < bytes.length; at += 100_000) await writer.append(bytes.subarray(at, Math.min(bytes.length, at + 100_000)));
      // Readers keep reading across the first part's end while the commit composes the
      // object and removes the chunks; on S3 each read may list the chunks again.
      const [from, to] = [PART - 10, PART + 10];
      let committed = false;
      const reader = async () => {
        const seen: string[] = [];
        do {
          const body = await writer.read(from, to);
          assert.ok(body, 'the staged or published bytes are there');
          const got = await read(body);
          if (!got.equals(bytes.subarray(from, to))) seen.push(`${got.length} bytes, not the ${to - from} asked for`);
        } while (!committed);
        return seen;
      };
      const readers = Array.from({ length: 8 }, reader);
      await writer.commit('application/octet-stream');
      committed = true;
      assert.deepEqual((await Promise.all(readers)).flat(), [], 'no read of another length or other bytes');
      assert.ok((await read((await writer.read(0, bytes.length))!)).equals(bytes), 'after the commit, every byte from the published object');
      await writer.close();
      await store.delete(key);
    });

    test('staging with a replay: nothing is staged for readers elsewhere until one follows; then it reads every byte before the commit', async () => {
      const key = `blobs/sha256/${randomBytes(32).toString('hex')}`;
      const bytes = randomBytes(4 * PART + 777);
      const replay = replayOf(bytes);
      const writer = store.staging(key, { replay });
      assert.equal(await writer.open(), 0);
      const append = async (from: number, to: number) => {
        for (let at = from; at < to; at += 100_000) await writer.append(bytes.subarray(at, Math.min(to, at + 100_000)));
      };
      await append(0, 2 * PART);
      const reader = store.staging(key);
      if (!writer.immediate) {
        // Parts go straight into the upload: no chunk object, nothing readable elsewhere.
        assert.deepEqual(await driver.staged?.(key), []);
        assert.equal(await reader.length(), 0);
      }
      await reader.follow();
      await append(2 * PART, bytes.length);
      // The parts uploaded before are staged again from the replay, the rest as they come.
      await until(async () => (await reader.length()) === (writer.immediate ? bytes.length : 4 * PART), 20_000, 'every whole part to be readable elsewhere');
      assert.ok((await read((await reader.read(0, 4 * PART))!)).equals(bytes.subarray(0, 4 * PART)), 'the follower reads the bytes appended');
      assert.equal(await store.stat(key), undefined, 'nothing under the key before the commit');
      await writer.commit('application/octet-stream');
      assert.ok((await read((await store.get(key))!.body)).equals(bytes), 'the published object is the bytes appended');
      assert.ok((await read((await reader.read(4 * PART, bytes.length))!)).equals(bytes.subarray(4 * PART)), 'the last part, from the published object');
      await reader.close();
      assert.deepEqual((await driver.staged?.(key)) ?? [], [], 'no chunk or announcement left');
      if (driver.openUploads) assert.equal(await driver.openUploads(key), 0);
      await writer.close();
      await store.delete(key);
    });

    test('staging with a replay: a writer that stops leaves nothing a next writer could verify, on S3 (its parts are in an upload), and that upload is aborted', async () => {
      const key = `blobs/sha256/${randomBytes(32).toString('hex')}`;
      const bytes = randomBytes(2 * PART + 500);
      const replay = replayOf(bytes);
      const first = store.staging(key, { replay });
      await first.open();
      await first.append(bytes);
      if (driver.openUploads) await until(async () => (await driver.openUploads!(key)) === 1, 10_000, 'the parts to be uploading');
      // The first writer is gone (a crash): no commit, no close.
      const second = store.staging(key, { replay });
      const durable = await second.open();
      assert.equal(durable, first.immediate ? bytes.length : 0, 'the durable offset: the file, or nothing');
      if (driver.openUploads) assert.equal(await driver.openUploads(key), 0, 'the crashed writer\'s upload is aborted');
      await second.append(bytes.subarray(durable));
      await second.commit();
      assert.ok((await read((await store.get(key))!.body)).equals(bytes));
      assert.deepEqual((await driver.staged?.(key)) ?? [], []);
      await Promise.all([first.close(), second.close()]);
      await store.delete(key);
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
