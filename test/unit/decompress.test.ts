// Layer decompression by media type, on bytes made by the real gzip and zstd tools.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { DecompressError, compressionOf, decompressed as decode, type NativeDecoders, type Compression } from '../../core/layer/decompress.ts';
import { nodeDecoders } from '../../core/adapters/node-zlib.ts';
import { ZstdFrameEnds } from '../../core/layer/zstd-frames.ts';

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

/** A zstd stream of 40 frames made by the CLI (checksums on and off, with and without content sizes), a skippable frame between some. */
function zstdFrames(): { frames: Buffer; plain: Buffer; ends: number[] } {
  const pieces: Buffer[] = [];
  const plain: Buffer[] = [];
  const ends: number[] = [];
  let at = 0;
  for (let i = 0; i < 40; i++) {
    const content = Buffer.concat([randomBytes((i * 7919) % 200_000), Buffer.alloc((i * 104_729) % 300_000, i)]);
    const options = [i % 2 ? '--no-check' : '--check', ...(i % 3 ? [] : ['--no-content-size']), `-${1 + (i % 9)}`];
    const frame = execFileSync('zstd', ['-q', '-c', ...options], { input: content, maxBuffer: 64 * 1024 * 1024 });
    pieces.push(frame);
    plain.push(content);
    at += frame.length;
    ends.push(at);
    if (i % 5 === 4) {
      const skippable = Buffer.alloc(8 + i);
      skippable.writeUInt32LE(0x184d2a50 + (i % 16), 0);
      skippable.writeUInt32LE(i, 4);
      pieces.push(skippable);
      at += skippable.length;
      ends.push(at);
    }
  }
  return { frames: Buffer.concat(pieces), plain: Buffer.concat(plain), ends };
}

test('zstd frame ends are found from the headers alone, in any chunking; a stream cut inside a frame is not at a frame end; other bytes are refused', () => {
  const { frames, ends } = zstdFrames();
  for (const size of [1, 3, 4096, 131_072, frames.length]) {
    const walker = new ZstdFrameEnds();
    let offset = 0;
    for (let i = 0; i < frames.length; i += size) {
      for (const piece of walker.split(frames.subarray(i, i + size))) {
        const start = offset;
        offset += piece.length;
        const inside = ends.find((end) => end > start && end < offset);
        assert.equal(inside, undefined, `${size}-byte chunks: the piece ${start}..${offset} holds the frame end ${inside} before its last byte`);
      }
    }
    assert.equal(offset, frames.length);
    assert.ok(walker.atFrameEnd);
  }
  const cut = new ZstdFrameEnds();
  cut.split(frames.subarray(0, ends[0]! + 10));
  assert.equal(cut.atFrameEnd, false);
  assert.throws(() => new ZstdFrameEnds().split(Buffer.from('not zstd at all')), /not a zstd frame/);
});

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

test(`${label}: many zstd frames, with and without checksums and sizes, and skippable frames between, decompress whole in any chunking`, async () => {
  const { frames, plain } = zstdFrames();
  for (const size of [1, 4093, 65_536, frames.length]) {
    assert.deepEqual(await collect(decompressed(chunked(frames, size), 'zstd')), plain, `${size}-byte chunks`);
  }
  // Cut inside a skippable frame, after the last real one: not a whole stream.
  await assert.rejects(collect(decompressed(chunked(frames.subarray(0, frames.length - 3), 4096), 'zstd')), DecompressError, 'truncated in a skippable frame');
});

test(`${label}: a zstd bomb (1 GiB of zeros in kilobytes) held back: a reader that stops holds only the buffers, not the output`, async () => {
  const bomb = execFileSync('sh', ['-c', 'head -c 1073741824 /dev/zero | zstd -q -c'], { maxBuffer: 16 * 1024 * 1024 });
  assert.ok(bomb.length < 1024 * 1024, `${bomb.length} bytes compressed`);
  const before = process.memoryUsage().arrayBuffers;
  const reader = decompressed(chunked(bomb, 65_536), 'zstd').getReader();
  let read = 0;
  while (read < 64 * 1024 * 1024) read += (await reader.read()).value!.length;
  await new Promise((r) => setTimeout(r, 100));
  const grown = process.memoryUsage().arrayBuffers - before;
  assert.ok(grown < 48 * 1024 * 1024, `${(grown / 1024 / 1024).toFixed(1)} MiB held after 64 MiB read of 1 GiB`);
  await reader.cancel();
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
