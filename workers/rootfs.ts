// `pullthrough rootfs`: a root filesystem from a pullthrough server's layer plan. Layers
// are downloaded in parallel (uncompressed tars and their TOCs, straight from the bucket
// when the server hands out presigned URLs), each checked against its diff_id, then
// applied in order with OCI whiteout semantics, driven by the TOC.
//
// Hostile layers: every path is resolved inside <dir> as if it were `/` (symlinks in
// parent directories are followed within <dir>, never out of it; the final component is
// never followed); names with `..` components or absolute names, and hard links to such
// names, are rejected and reported. Every regular file's content is hashed while it is
// written and checked against its TOC digest.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, mkdir, mkdtemp, open, readdir, readlink, rm, symlink, utimes, type FileHandle } from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { parseToc, type Toc, type TocEntry } from '../core/toc.ts';
import type { RootfsPlan, PlannedLayer } from '../core/plan.ts';

const run = promisify(execFile);
const COPY_BUFFER_BYTES = 1024 * 1024;
const MAX_SYMLINK_HOPS = 255;

export interface Rejected {
  layer: number;
  path: string;
  reason: string;
}

export interface RootfsReport {
  manifest: string;
  layers: number;
  /** Bytes of layer tars downloaded. */
  bytes: number;
  entries: number;
  /** Entries refused as unsafe or impossible (reported, never silently dropped). */
  rejected: Rejected[];
  /** Entries not created, with why (device nodes when not root). */
  skipped: Rejected[];
}

export interface RootfsOptions {
  server: string;
  image: string;
  dir: string;
  platform?: string | undefined;
  /** Layers downloaded at once. */
  concurrency?: number;
  /** How long to wait for the server to extract layers. */
  waitMs?: number;
  progress?: Progress;
}

/** Progress of the downloads and of the apply step, for a display. */
export interface Progress {
  plan(layers: readonly PlannedLayer[]): void;
  downloaded(layer: number, bytes: number): void;
  applied(layer: number): void;
  done(): void;
}

class RootfsError extends Error {}

async function fetchOk(url: string, what: string, signal: AbortSignal): Promise<Response> {
  const res = await fetch(url, { signal });
  if (!res.ok) {
    const text = await res.text().catch(() => '');
    throw new RootfsError(`${what}: ${res.status} ${text.slice(0, 500)}`);
  }
  return res;
}

/** The plan, once every layer is extracted (polling while the server answers 202). */
async function readyPlan(options: RootfsOptions): Promise<RootfsPlan> {
  const url = new URL(`/api/rootfs/${options.image}`, options.server);
  if (options.platform) url.searchParams.set('platform', options.platform);
  const deadline = Date.now() + (options.waitMs ?? 30 * 60 * 1000);
  for (;;) {
    const res = await fetch(url);
    const body = (await res.json().catch(() => undefined)) as (RootfsPlan & { errors?: unknown }) | undefined;
    if (!res.ok || !body) throw new RootfsError(`the server refused the plan (${res.status}): ${JSON.stringify(body?.errors ?? body)}`);
    const failed = body.layers.filter((l) => l.state === 'failed' || l.state === 'absent');
    if (failed.length > 0) {
      throw new RootfsError(`layers cannot be extracted: ${failed.map((l) => `${l.diff_id} ${l.state}${l.error ? `: ${l.error}` : ''}`).join('; ')}`);
    }
    if (res.status === 200 && body.ready) return body;
    if (Date.now() > deadline) throw new RootfsError('timed out waiting for the server to extract the layers');
    const wait = Math.min(10, Math.max(1, Number(res.headers.get('retry-after')) || 1));
    await new Promise((r) => setTimeout(r, wait * 1000));
  }
}

/** Downloads layer.tar to `file`, checking it against the diff_id, and its TOC against its digest. */
async function download(layer: PlannedLayer, file: string, onBytes: (n: number) => void, signal: AbortSignal): Promise<Toc> {
  const tocBytes = new Uint8Array(await (await fetchOk(layer.toc_url!, `TOC of ${layer.diff_id}`, signal)).arrayBuffer());
  const tocDigest = `sha256:${createHash('sha256').update(tocBytes).digest('hex')}`;
  if (layer.toc_digest && tocDigest !== layer.toc_digest) throw new RootfsError(`TOC of ${layer.diff_id} does not match its digest`);
  const toc = parseToc(new TextDecoder().decode(tocBytes));
  if (toc.diff_id !== layer.diff_id) throw new RootfsError(`TOC of ${layer.diff_id} is for ${toc.diff_id}`);
  const res = await fetchOk(layer.tar_url!, `layer ${layer.diff_id}`, signal);
  const hash = createHash('sha256');
  let bytes = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      bytes += chunk.length;
      onBytes(bytes);
      done(null, chunk);
    },
  });
  await pipeline(Readable.fromWeb(res.body! as never), counter, createWriteStream(file), { signal });
  const actual = `sha256:${hash.digest('hex')}`;
  if (actual !== layer.diff_id) throw new RootfsError(`layer ${layer.diff_id} downloaded as ${actual}`);
  if (bytes !== toc.size) throw new RootfsError(`layer ${layer.diff_id} is ${bytes} bytes, its TOC says ${toc.size}`);
  return toc;
}

const components = (path: string) => path.split('/').filter((p) => p !== '' && p !== '.');
const unsafeName = (path: string) => path.startsWith('/') || components(path).includes('..');

/** Applies layers to one root directory. */
class Applier {
  readonly root: string;
  readonly isRoot = process.getuid?.() === 0;
  readonly rejected: Rejected[] = [];
  readonly skipped: Rejected[] = [];
  /** Directory metadata, applied last (a read-only directory would block its children). */
  readonly dirs = new Map<string, TocEntry>();
  entries = 0;
  #layer = 0;
  /** Paths (relative to root) this layer created: its own whiteouts must not remove them. */
  #created = new Set<string>();

  constructor(root: string) {
    this.root = root;
  }

  #abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  #reject(path: string, reason: string): void {
    this.rejected.push({ layer: this.#layer, path, reason });
  }

  /**
   * Resolves a parent directory path inside root, chroot-style: symlinks are followed but
   * `/` means root and `..` stops at root. Missing directories are created. Returns the
   * path relative to root, or a reason it cannot be used.
   */
  async #resolveDir(path: string): Promise<{ rel: string } | { error: string }> {
    const resolved: string[] = [];
    const queue = components(path);
    let hops = 0;
    while (queue.length > 0) {
      const part = queue.shift()!;
      if (part === '..') {
        resolved.pop();
        continue;
      }
      const candidate = [...resolved, part].join('/');
      const st = await lstat(this.#abs(candidate)).catch(() => undefined);
      if (!st) {
        await mkdir(this.#abs(candidate), { mode: 0o755 });
        resolved.push(part);
      } else if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) return { error: 'too many levels of symbolic links' };
        const target = await readlink(this.#abs(candidate));
        if (target.startsWith('/')) resolved.length = 0;
        queue.unshift(...components(target));
      } else if (st.isDirectory()) {
        resolved.push(part);
      } else {
        return { error: `${candidate} is not a directory` };
      }
    }
    return { rel: resolved.join('/') };
  }

  /** Where an entry's own path lands: its parent resolved safely, its name never followed. */
  async #place(path: string): Promise<string | undefined> {
    const parts = components(path);
    if (parts.length === 0) return '';
    const name = parts.pop()!;
    const parent = await this.#resolveDir(parts.join('/'));
    if ('error' in parent) {
      this.#reject(path, parent.error);
      return undefined;
    }
    return parent.rel === '' ? name : `${parent.rel}/${name}`;
  }

  async apply(layer: number, tarFile: string, toc: Toc): Promise<void> {
    this.#layer = layer;
    this.#created = new Set();
    const tar = await open(tarFile, 'r');
    const buffer = Buffer.allocUnsafe(COPY_BUFFER_BYTES);
    try {
      for (const entry of toc.entries) {
        this.entries++;
        await this.#entry(entry, tar, buffer);
      }
    } finally {
      await tar.close();
    }
  }

  async #entry(entry: TocEntry, tar: FileHandle, buffer: Buffer): Promise<void> {
    if (unsafeName(entry.path)) return this.#reject(entry.path, entry.path.startsWith('/') ? 'absolute path' : 'path leaves the root through ..');
    if (entry.opaque !== undefined) return this.#opaque(entry);
    if (entry.whiteout !== undefined) return this.#whiteout(entry);
    const rel = await this.#place(entry.path);
    if (rel === undefined) return;
    const abs = this.#abs(rel);
    if (rel === '') {
      if (entry.type === 'dir') this.dirs.set('', entry);
      else this.#reject(entry.path, 'the root can only be a directory');
      return;
    }
    const existing = await lstat(abs).catch(() => undefined);
    if (existing && !(existing.isDirectory() && entry.type === 'dir')) await rm(abs, { recursive: true, force: true });
    this.#created.add(rel);
    switch (entry.type) {
      case 'dir':
        if (!existing?.isDirectory()) await mkdir(abs, { mode: 0o700 });
        this.dirs.set(rel, entry);
        return;
      case 'file':
        await this.#file(entry, abs, tar, buffer);
        break;
      case 'symlink':
        await symlink(entry.linkname!, abs);
        break;
      case 'hardlink': {
        if (unsafeName(entry.linkname!)) return this.#reject(entry.path, `hard link to ${entry.linkname} outside the root`);
        const target = await this.#place(entry.linkname!);
        if (target === undefined) return;
        const st = await lstat(this.#abs(target)).catch(() => undefined);
        if (!st || st.isDirectory()) return this.#reject(entry.path, `hard link to ${entry.linkname}, which is ${st ? 'a directory' : 'missing'}`);
        await link(this.#abs(target), abs);
        return; // a hard link shares its target's metadata
      }
      case 'fifo':
        await run('mkfifo', ['-m', (entry.mode & 0o777).toString(8), abs]);
        break;
      case 'chardev':
      case 'blockdev':
        if (!this.isRoot) {
          this.skipped.push({ layer: this.#layer, path: entry.path, reason: `${entry.type} ${entry.devmajor},${entry.devminor} needs root` });
          this.#created.delete(rel);
          return;
        }
        await run('mknod', ['-m', (entry.mode & 0o7777).toString(8), abs, entry.type === 'chardev' ? 'c' : 'b', String(entry.devmajor), String(entry.devminor)]);
        break;
    }
    if (this.isRoot) await lchown(abs, entry.uid, entry.gid);
    // chown clears set-id bits: the mode goes on after it. Symlinks have no mode of their own.
    if (entry.type !== 'symlink') await chmod(abs, entry.mode);
    await lutimes(abs, entry.mtime, entry.mtime);
  }

  async #file(entry: TocEntry, abs: string, tar: FileHandle, buffer: Buffer): Promise<void> {
    const out = await open(abs, 'wx', 0o600);
    const hash = createHash('sha256');
    try {
      let done = 0;
      while (done < entry.size) {
        const want = Math.min(buffer.length, entry.size - done);
        const { bytesRead } = await tar.read(buffer, 0, want, entry.offset + done);
        if (bytesRead === 0) throw new RootfsError(`${entry.path}: the layer tar ends inside the file`);
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        await out.write(chunk);
        done += bytesRead;
      }
    } finally {
      await out.close();
    }
    const actual = `sha256:${hash.digest('hex')}`;
    if (actual !== entry.digest) throw new RootfsError(`${entry.path}: content ${actual} does not match the TOC's ${entry.digest}`);
  }

  async #whiteout(entry: TocEntry): Promise<void> {
    const rel = await this.#place(entry.whiteout!);
    if (rel === undefined || rel === '') return;
    if (this.#created.has(rel)) return; // a lower layer's file, not this layer's replacement
    this.dirs.delete(rel);
    await rm(this.#abs(rel), { recursive: true, force: true });
  }

  async #opaque(entry: TocEntry): Promise<void> {
    const dir = await this.#resolveDir(entry.opaque!);
    if ('error' in dir) return this.#reject(entry.path, dir.error);
    for (const name of await readdir(this.#abs(dir.rel))) {
      const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
      if (this.#created.has(rel)) continue;
      this.dirs.delete(rel);
      await rm(this.#abs(rel), { recursive: true, force: true });
    }
  }

  /** Directory modes, owners and times, deepest first. */
  async finish(): Promise<void> {
    const dirs = [...this.dirs].sort((a, b) => b[0].length - a[0].length);
    for (const [rel, entry] of dirs) {
      const abs = this.#abs(rel);
      const st = await lstat(abs).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      if (this.isRoot) await lchown(abs, entry.uid, entry.gid);
      await chmod(abs, entry.mode);
      await utimes(abs, entry.mtime, entry.mtime);
    }
  }
}

/** Builds `options.dir` (created if missing; it should be empty) from the image's layers. */
export async function buildRootfs(options: RootfsOptions): Promise<RootfsReport> {
  const plan = await readyPlan(options);
  const root = resolve(options.dir);
  await mkdir(root, { recursive: true });
  const scratch = await mkdtemp(join(tmpdir(), 'pt-rootfs-'));
  const progress = options.progress;
  progress?.plan(plan.layers);
  const stop = new AbortController();
  const limit = Math.max(1, options.concurrency ?? 4);
  // Downloads run `limit` at a time in layer order; layer i is applied once it is
  // downloaded and layer i-1 is applied, while later downloads go on.
  const downloads = plan.layers.map(() => Promise.withResolvers<Toc>());
  for (const d of downloads) d.promise.catch(() => {});
  let next = 0;
  const pool = Array.from({ length: Math.min(limit, plan.layers.length) }, async () => {
    while (next < plan.layers.length && !stop.signal.aborted) {
      const i = next++;
      await download(plan.layers[i]!, join(scratch, `${i}.tar`), (n) => progress?.downloaded(i, n), stop.signal).then(downloads[i]!.resolve, downloads[i]!.reject);
    }
  });
  try {
    const applier = new Applier(root);
    let bytes = 0;
    for (let i = 0; i < plan.layers.length; i++) {
      const toc = await downloads[i]!.promise;
      bytes += toc.size;
      await applier.apply(i, join(scratch, `${i}.tar`), toc);
      await rm(join(scratch, `${i}.tar`), { force: true });
      progress?.applied(i);
    }
    await applier.finish();
    progress?.done();
    return { manifest: plan.manifest, layers: plan.layers.length, bytes, entries: applier.entries, rejected: applier.rejected, skipped: applier.skipped };
  } finally {
    stop.abort();
    await Promise.allSettled(pool);
    await rm(scratch, { recursive: true, force: true });
  }
}
