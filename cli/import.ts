// `pullthrough import <archive.tar | layout-dir> --as <repository>[:<tag>]`: sends an OCI
// image layout (a directory is sent as a tar made on the fly) or a docker save archive to
// the server (`POST /api/import`, the admin grant), streamed: never read whole.
// `pullthrough export <image> <file.tar>`: the reverse, a cached image as an OCI layout tar.
import { createReadStream, createWriteStream } from 'node:fs';
import { readdir, rename, stat } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { describeErrorBody, formatBytes } from '../functions/wire.ts';
import { TAR_END, tarFileHeader, tarPadding } from '../core/layer/tar.ts';

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

/** The layout directory as a tar stream, file by file (index.json last, as skopeo writes it). */
async function* tarOf(root: string): AsyncGenerator<Uint8Array> {
  const files = (await filesUnder(root)).sort((a, b) => Number(a === 'index.json') - Number(b === 'index.json'));
  for (const file of files) {
    const { size } = await stat(join(root, file));
    yield tarFileHeader(file, size);
    for await (const chunk of createReadStream(join(root, file))) yield chunk as Uint8Array;
    yield tarPadding(size);
  }
  yield TAR_END;
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
    const detail = describeErrorBody(text);
    console.error(`pullthrough import: nothing imported (${res.status}): ${detail}`);
    return 1;
  }
  const report = JSON.parse(text) as { format: string; tags: Array<{ tag: string; digest: string }>; blobs: number; bytes_written: number; bytes_read: number };
  for (const t of report.tags) console.log(`${t.tag} ${t.digest}`);
  console.error(`imported a ${report.format}: ${report.blobs} blobs, ${formatBytes(report.bytes_written)} written of ${formatBytes(report.bytes_read)} read`);
  return 0;
}

/** `pullthrough export <image> <file.tar>`: the cached image as an OCI layout tar; the exit status: 0 written, 1 refused. */
export async function exportCommand(server: string, image: string, file: string, platform: string | undefined, headers: Record<string, string>): Promise<number> {
  const url = new URL(`/api/export/${image}`, server);
  if (platform) url.searchParams.set('platform', platform);
  const res = await fetch(url, { headers });
  if (res.status !== 200) {
    const text = await res.text();
    const detail = describeErrorBody(text);
    console.error(`pullthrough export: nothing written (${res.status}): ${detail}`);
    return 1;
  }
  const partial = `${file}.partial`;
  await pipeline(Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>), createWriteStream(partial));
  await rename(partial, file);
  console.log(`${file} ${res.headers.get('docker-content-digest')}`);
  return 0;
}
