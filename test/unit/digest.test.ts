import { test } from 'node:test';
import assert from 'node:assert/strict';
import { digestOf, verifyingStream } from '../../core/oci/digest.ts';

const enc = new TextEncoder();
const source = (...chunks: string[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const s of chunks) c.enqueue(enc.encode(s));
      c.close();
    },
  });
const drain = async (s: ReadableStream<Uint8Array>) => {
  let n = 0;
  for await (const chunk of s) n += chunk.byteLength;
  return n;
};

test('matching content passes through whole', async () => {
  const digest = digestOf(enc.encode('hello world'));
  assert.equal(await drain(source('hello ', 'world').pipeThrough(verifyingStream({ digest, size: 11 }))), 11);
});

test('a digest mismatch errors the stream instead of ending it', async () => {
  const digest = digestOf(enc.encode('hello world'));
  await assert.rejects(drain(source('hello there').pipeThrough(verifyingStream({ digest }))), (e: any) => {
    assert.equal(e.code, 'UPSTREAM_INVALID');
    assert.deepEqual(e.detail, { expected: digest, actual: digestOf(enc.encode('hello there')) });
    return true;
  });
});

test('a size overrun fails before the end and a short body fails at the end', async () => {
  const digest = digestOf(enc.encode('abc'));
  await assert.rejects(drain(source('ab', 'cdef').pipeThrough(verifyingStream({ digest, size: 3 }))), /size does not match/);
  await assert.rejects(drain(source('ab').pipeThrough(verifyingStream({ digest, size: 3 }))), /size does not match/);
});
