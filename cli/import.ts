// `pullthrough import <archive.tar | layout-dir> --as <repository>[:<tag>]`: sends an OCI
// image layout (a directory is sent as a tar made on the fly) or a docker save archive to
// the server (`POST /api/import`, the admin grant), streamed: never read whole.
import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { formatBytes } from '../functions/wire.ts';

/** Every regular file under `root`, as paths relative to it, in order. */
async function filesUnder(root: string, dir = root): Promise<string[]> {
  const out: string[] = [];
  for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await filesUnder(root, path)));
    else if (entry.isFile()) out.push(relative(root, path));
  }
  return out;
}

/** A ustar header for a regular file (names of an OCI layout fit in 100 bytes). */
function header(name: string, size: number): Uint8Array {
  if (Buffer.byteLength(name) > 100) throw new Error(`${name}: the name is too long for a tar header`);
  const block = Buffer.alloc(512);
  const octal = (value: number, at: number, length: number) => block.write(`${value.toString(8).padStart(length - 1, '0')}\0`, at, length, 'ascii');
  block.write(name, 0, 100, 'utf8');
  octal(0o644, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  octal(size, 124, 12);
  octal(0, 136, 12);
  block.fill(' ', 148, 156);
  block.write('0', 156, 1, 'ascii');
  block.write('ustar\0', 257, 6, 'ascii');
  block.write('00', 263, 2, 'ascii');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return block;
}

/** The layout directory as a tar stream, file by file (index.json last, as skopeo writes it). */
async function* tarOf(root: string): AsyncGenerator<Uint8Array> {
  const files = (await filesUnder(root)).sort((a, b) => Number(a === 'index.json') - Number(b === 'index.json'));
  for (const file of files) {
    const { size } = await stat(join(root, file));
    yield header(file, size);
    for await (const chunk of createReadStream(join(root, file))) yield chunk as Uint8Array;
    if (size % 512) yield new Uint8Array(512 - (size % 512));
  }
  yield new Uint8Array(1024);
}

/** Runs it; the exit status: 0 imported, 1 refused or failed. */
export async function importCommand(server: string, source: string, as: string, headers: Record<string, string>): Promise<number> {
  const isDir = (await stat(source)).isDirectory();
  const body = Readable.toWeb(isDir ? Readable.from(tarOf(source)) : createReadStream(source)) as ReadableStream<Uint8Array>;
  const url = new URL('/api/import', server);
  url.searchParams.set('as', as);
  const res = await fetch(url, { method: 'POST', headers: { ...headers, 'content-type': 'application/x-tar' }, body, duplex: 'half' } as RequestInit);
  const text = await res.text();
  if (res.status !== 201) {
    let detail = text.slice(0, 500);
    try {
      const [error] = (JSON.parse(text) as { errors: Array<{ code: string; message: string; detail: unknown }> }).errors;
      detail = `${error!.code}: ${error!.message}${error!.detail ? ` ${JSON.stringify(error!.detail)}` : ''}`;
    } catch {}
    console.error(`pullthrough import: nothing imported (${res.status}): ${detail}`);
    return 1;
  }
  const report = JSON.parse(text) as { format: string; tags: Array<{ tag: string; digest: string }>; blobs: number; bytes_written: number; bytes_read: number };
  for (const t of report.tags) console.log(`${t.tag} ${t.digest}`);
  console.error(`imported a ${report.format}: ${report.blobs} blobs, ${formatBytes(report.bytes_written)} written of ${formatBytes(report.bytes_read)} read`);
  return 0;
}
