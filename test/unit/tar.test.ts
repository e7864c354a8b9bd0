// The tar reader and TOC against archives written by GNU tar (PAX and GNU formats), fed
// in awkward chunk sizes: every member is found, and every file's offset and digest point
// at exactly its bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { link, mkdir, mkdtemp, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TarParser, TarError, normalizeTarPath, type TarEntry } from '../../core/layer/tar.ts';
import { tocStream, tocWriter, parseToc, type TocEntry } from '../../core/layer/toc.ts';
import { rawTar } from '../setup/tar-writer.ts';

let dir: string;
const LONG = `${'deep/'.repeat(30)}${'n'.repeat(120)}.txt`;
const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const files: Record<string, Buffer> = {
  'etc/hello': Buffer.from('hello\n'),
  'empty': Buffer.alloc(0),
  'block-sized': Buffer.alloc(512, 1),
  'odd': Buffer.alloc(1000, 2),
  [LONG]: Buffer.from('long name\n'),
  'etc/.wh.removed': Buffer.alloc(0),
  'var/.wh..wh..opq': Buffer.alloc(0),
};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-tar-'));
  const root = join(dir, 'root');
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
  }
  await mkdir(join(root, 'emptydir'));
  await chmod(join(root, 'odd'), 0o4755);
  await symlink('../etc/hello', join(root, 'var', 'link-to-hello'));
  await symlink(`/${'t'.repeat(150)}`, join(root, 'long-symlink'));
  await link(join(root, 'etc/hello'), join(root, 'hardlink'));
  await link(join(root, LONG), join(root, 'hard-to-long'));
});

after(() => rm(dir, { recursive: true, force: true }));

const archive = (format: string) => new Uint8Array(execFileSync('tar', [`--format=${format}`, '--sort=name', '-C', join(dir, 'root'), '-cf', '-', '.']));

function parse(tar: Uint8Array, chunkSize: number): { entries: TarEntry[]; data: Map<string, Uint8Array> } {
  const entries: TarEntry[] = [];
  const data = new Map<string, Uint8Array>();
  let parts: Uint8Array[] = [];
  const parser = new TarParser({
    entry: (e) => void entries.push(e),
    data: (c) => void parts.push(c.slice()),
    entryEnd() {
      data.set(entries.at(-1)!.name, Buffer.concat(parts));
      parts = [];
    },
  });
  for (let i = 0; i < tar.length; i += chunkSize) parser.push(tar.subarray(i, i + chunkSize));
  parser.end();
  return { entries, data };
}

for (const format of ['pax', 'gnu'] as const) {
  test(`GNU tar --format=${format}: every member, with offsets that point at its data`, () => {
    const tar = archive(format);
    for (const chunkSize of [1, 7, 511, 512, 513, 4096, tar.length]) {
      const { entries, data } = parse(tar, chunkSize);
      const byPath = new Map(entries.map((e) => [normalizeTarPath(e.name), e]));
      assert.deepEqual([...byPath.keys()].sort(), [
        '.', 'block-sized', 'deep', ...Array.from({ length: 29 }, (_, i) => 'deep/'.repeat(i + 2).slice(0, -1)), LONG,
        'empty', 'emptydir', 'etc', 'etc/.wh.removed', 'etc/hello', 'hard-to-long', 'hardlink', 'long-symlink', 'odd', 'var', 'var/.wh..wh..opq', 'var/link-to-hello',
      ].sort());
      for (const [path, content] of Object.entries(files)) {
        const e = byPath.get(path)!;
        assert.equal(e.type, 'file', path);
        assert.equal(e.size, content.length, path);
        assert.deepEqual(Buffer.from(tar.subarray(e.offset, e.offset + e.size)), content, `${path} at its offset`);
        assert.deepEqual(Buffer.from(data.get(e.name)!), content, `${path} data`);
      }
      assert.equal(byPath.get('odd')!.mode, 0o4755);
      assert.equal(byPath.get('emptydir')!.type, 'dir');
      assert.deepEqual([byPath.get('var/link-to-hello')!.type, byPath.get('var/link-to-hello')!.linkname], ['symlink', '../etc/hello']);
      assert.equal(byPath.get('long-symlink')!.linkname, `/${'t'.repeat(150)}`);
      assert.equal(byPath.get('hardlink')!.type, 'hardlink');
      assert.equal(normalizeTarPath(byPath.get('hardlink')!.linkname!), 'etc/hello');
      assert.equal(normalizeTarPath(byPath.get('hard-to-long')!.linkname!), LONG);
    }
  });
}

test('the TOC stream passes the tar through unchanged and marks whiteouts and opaque directories', async () => {
  const tar = archive('pax');
  const toc: TocEntry[] = [];
  const out: Uint8Array[] = [];
  const source = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < tar.length; i += 3000) c.enqueue(tar.slice(i, i + 3000));
      c.close();
    },
  });
  for await (const chunk of source.pipeThrough(tocStream((e) => toc.push(e)))) out.push(chunk);
  assert.deepEqual(Buffer.concat(out), Buffer.from(tar));
  const byPath = new Map(toc.map((e) => [e.path, e]));
  assert.equal(byPath.get('etc/.wh.removed')!.whiteout, 'etc/removed');
  assert.equal(byPath.get('var/.wh..wh..opq')!.opaque, 'var');
  assert.equal(byPath.get('etc/hello')!.whiteout, undefined);
  for (const [path, content] of Object.entries(files)) assert.equal(byPath.get(path)!.digest, sha256(content), path);
  assert.equal(byPath.get('hardlink')!.linkname, 'etc/hello');
  assert.equal(byPath.get('hardlink')!.digest, undefined);
});

test('the TOC document round-trips and carries its own digest', async () => {
  const writer = tocWriter('sha256:' + 'a'.repeat(64));
  const entry: TocEntry = { path: 'etc/hello', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 6, mtime: 1, offset: 512, digest: sha256(Buffer.from('hello\n')) };
  const text = new Response(writer.readable).text();
  writer.write(entry);
  writer.write({ ...entry, path: 'etc/again', offset: 1536 });
  writer.finish(3072);
  const body = await text;
  assert.deepEqual(parseToc(body), { version: 1, diff_id: 'sha256:' + 'a'.repeat(64), entries: [entry, { ...entry, path: 'etc/again', offset: 1536 }], size: 3072 });
  assert.equal(writer.digest(), sha256(Buffer.from(body)));
});

test('a corrupted header, a truncated archive and sparse files are clear errors', () => {
  const tar = archive('gnu');
  const corrupt = tar.slice();
  corrupt[0] = corrupt[0]! ^ 0xff;
  assert.throws(() => parse(corrupt, 4096), (e: unknown) => e instanceof TarError && /bad header checksum at byte 0/.test(e.message));
  const firstFile = parse(tar, tar.length).entries.find((e) => e.size > 0)!;
  assert.throws(() => parse(tar.subarray(0, firstFile.offset + 10), 4096), (e: unknown) => e instanceof TarError && /truncated/.test(e.message));
  const sparse = tar.slice(0, 1024);
  sparse[156] = 'S'.charCodeAt(0);
  let sum = 0;
  sparse.fill(0x20, 148, 156);
  for (let i = 0; i < 512; i++) sum += sparse[i]!;
  sparse.set(new TextEncoder().encode(sum.toString(8).padStart(6, '0') + '\0 '), 148);
  assert.throws(() => parse(sparse, 512), (e: unknown) => e instanceof TarError && /GNU sparse files are not supported/.test(e.message));
});

test('member names normalise to TOC paths, keeping what a consumer must refuse', () => {
  assert.equal(normalizeTarPath('./'), '.');
  assert.equal(normalizeTarPath('./etc//passwd'), 'etc/passwd');
  assert.equal(normalizeTarPath('usr/lib/'), 'usr/lib');
  assert.equal(normalizeTarPath('/abs/./x'), '/abs/x');
  assert.equal(normalizeTarPath('../escape'), '../escape');
  assert.equal(normalizeTarPath('a/../../b'), 'a/../../b');
});

test('extended attributes keep their bytes: a binary security.capability and a UTF-8 user attribute', () => {
  // cap_setfcap etc.: bytes above 0x7f, which a UTF-8 decoding of PAX values mangled.
  const capability = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
  const tar = rawTar([{ name: 'bin/tool', type: 'file', data: 'x', pax: { 'SCHILY.xattr.security.capability': capability, 'SCHILY.xattr.user.comment': 'héllo ✓' } }]);
  const { entries } = parse(tar, 100);
  assert.deepEqual(entries.map((e) => e.name), ['bin/tool']);
  assert.deepEqual(Buffer.from(entries[0]!.xattrs!['security.capability']!, 'base64'), capability);
  assert.equal(Buffer.from(entries[0]!.xattrs!['user.comment']!, 'base64').toString(), 'héllo ✓');
});
