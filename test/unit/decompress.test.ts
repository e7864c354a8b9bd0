// Layer decompression by media type, on bytes made by the real gzip and zstd tools.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { DecompressError, compressionOf, decompressed as decode, type NativeDecoders, type Compression } from '../../core/layer/decompress.ts';
import { nodeDecoders } from '../../core/adapters/node-zlib.ts';

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

// Each case on both decoders: the pure-JS ones (workerd's) and Node's zlib (the Node server's).
const DECODERS: Array<[string, NativeDecoders | undefined]> = [
  ['pure JS', undefined],
  ['native', nodeDecoders],
];
for (const [label, native] of DECODERS) {
  const decompressed = (source: ReadableStream<Uint8Array>, compression: Compression, signal?: AbortSignal) => decode(source, compression, signal, native);
  /** How far a stopped reader lets the input be read ahead: a piece for the pure-JS decoders, zlib's buffers natively. */
  const readAhead = native ? 1024 * 1024 : 2 * 65_536;

for (const [tool, compression] of [['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
  test(`${label}: ${tool} (made by the ${tool} CLI) decompresses in any chunking`, async () => {
    const compressed = compress(tool, original, tool === 'zstd' ? ['-19'] : []);
    for (const size of [1000, 65_536, compressed.length]) {
      assert.deepEqual(await collect(decompressed(chunked(compressed, size), compression)), original, `${tool} in ${size}-byte chunks`);
    }
  });
}

test(`${label}: concatenated zstd frames and multi-member gzip decompress whole`, async () => {
  const a = compress('zstd', original.subarray(0, 1_000_000));
  const b = compress('zstd', original.subarray(1_000_000));
  assert.deepEqual(await collect(decompressed(chunked(Buffer.concat([a, b]), 4096), 'zstd')), original);
  const g = Buffer.concat([compress('gzip', original.subarray(0, 1_000_000)), compress('gzip', original.subarray(1_000_000))]);
  assert.deepEqual(await collect(decompressed(chunked(g, 4096), 'gzip')), original);
});

test(`${label}: corrupted input errors the stream; truncated zstd errors, truncated gzip never yields more than it had`, async () => {
  const zstd = compress('zstd', original);
  await assert.rejects(collect(decompressed(chunked(zstd.subarray(0, zstd.length - 100), 4096), 'zstd')), DecompressError, 'zstd truncated');
  // fflate's streaming gunzip does not check the gzip trailer, so a cut may end the stream
  // early instead of erroring it; extraction still refuses it (the tar or the diff_id).
  const gzip = compress('gzip', original);
  const cut = await collect(decompressed(chunked(gzip.subarray(0, gzip.length - 1000), 4096), 'gzip')).catch((e: unknown) => e);
  if (!(cut instanceof DecompressError)) {
    assert.ok(Buffer.isBuffer(cut) && cut.length < original.length && original.subarray(0, cut.length).equals(cut), 'a prefix of the content');
  }
  for (const [tool, compression] of [['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
    const compressed = compress(tool, original);
    const garbage = Buffer.from(compressed);
    garbage.fill(0x55, 0, 8);
    await assert.rejects(collect(decompressed(chunked(garbage, 4096), compression)), DecompressError, `${tool} corrupted`);
  }
});

test(`${label}: decoding is pulled: a reader that stops reading stops the input being read`, async () => {
  const compressed = compress('gzip', original);
  let served = 0;
  const source = new ReadableStream<Uint8Array>({
    pull(c) {
      if (served >= compressed.length) return c.close();
      c.enqueue(compressed.subarray(served, served + 65_536));
      served += 65_536;
    },
  }, { highWaterMark: 0 });
  const reader = decompressed(source, 'gzip').getReader();
  await reader.read();
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(served <= readAhead, `only what the first output needed was read (${served} of ${compressed.length} bytes)`);
  await reader.cancel();
});

test(`${label}: an aborted signal stops decoding and cancels the source`, async () => {
  let cancelled = false;
  const source = new ReadableStream<Uint8Array>({ pull: (c) => c.enqueue(compress('gzip', Buffer.alloc(100_000))), cancel: () => void (cancelled = true) });
  const stop = new AbortController();
  const reader = decompressed(source, 'gzip', stop.signal).getReader();
  await reader.read();
  stop.abort(new Error('lease lost'));
  await assert.rejects(async () => { for (;;) if ((await reader.read()).done) break; }, /lease lost/);
  assert.equal(cancelled, true);
});
}
