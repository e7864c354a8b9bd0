// Layer decompression by media type, on bytes made by the real gzip and zstd tools.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { compressionOf, decompressStream } from '../../core/decompress.ts';

const chunked = (bytes: Uint8Array, size: number) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
      c.close();
    },
  });
const collect = async (s: ReadableStream<Uint8Array>) => {
  const parts: Uint8Array[] = [];
  for await (const p of s) parts.push(p);
  return Buffer.concat(parts);
};
// Compressible and incompressible stretches, bigger than zstd's block and window sizes.
const compress = (tool: 'gzip' | 'zstd', input: Uint8Array, level: string[] = []) =>
  execFileSync(tool, ['-c', ...(tool === 'zstd' ? ['-q'] : []), ...level], { input, maxBuffer: 64 * 1024 * 1024 });
const original = Buffer.concat([Buffer.alloc(3_000_000, 'pullthrough '), randomBytes(2_000_000), Buffer.alloc(1_000_000, 7)]);

test('media types map to their compression; anything else is UNSUPPORTED', () => {
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar+gzip'), 'gzip');
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar+zstd'), 'zstd');
  assert.equal(compressionOf('application/vnd.oci.image.layer.v1.tar'), 'none');
  assert.equal(compressionOf('application/vnd.docker.image.rootfs.diff.tar.gzip'), 'gzip');
  assert.throws(() => compressionOf('application/vnd.cncf.helm.chart.content.v1.tar+gzip'), (e: any) => {
    assert.equal(e.code, 'UNSUPPORTED');
    assert.equal(e.detail.mediaType, 'application/vnd.cncf.helm.chart.content.v1.tar+gzip');
    return true;
  });
});

for (const [tool, compression] of [['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
  test(`${tool} (made by the ${tool} CLI) decompresses in any chunking`, async () => {
    const compressed = compress(tool, original, tool === 'zstd' ? ['-19'] : []);
    for (const size of [1000, 65_536, compressed.length]) {
      assert.deepEqual(await collect(chunked(compressed, size).pipeThrough(decompressStream(compression))), original, `${tool} in ${size}-byte chunks`);
    }
  });
}

test('concatenated zstd frames decompress whole', async () => {
  const a = compress('zstd', original.subarray(0, 1_000_000));
  const b = compress('zstd', original.subarray(1_000_000));
  assert.deepEqual(await collect(chunked(Buffer.concat([a, b]), 4096).pipeThrough(decompressStream('zstd'))), original);
});

test('truncated or corrupted input errors the stream instead of ending it', async () => {
  for (const [tool, compression] of [['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
    const compressed = compress(tool, original);
    await assert.rejects(collect(chunked(compressed.subarray(0, compressed.length - 100), 4096).pipeThrough(decompressStream(compression))), `${tool} truncated`);
    const garbage = Buffer.from(compressed);
    garbage.fill(0x55, 0, 8);
    await assert.rejects(collect(chunked(garbage, 4096).pipeThrough(decompressStream(compression))), `${tool} corrupted`);
  }
});
