// The apply step of `pullthrough rootfs`: layers in order, OCI whiteout semantics, driven
// by each layer's TOC. Directories, links, whiteouts and metadata are done here, with
// synchronous calls; regular files go in batches to the writer threads
// (workers/rootfs-write.ts), which fetch their bytes by Range and write them in parallel.
//
// Hostile layers: every path is resolved inside the root as if it were `/` (symlinks in
// parent directories are followed within the root, never out of it; the final component
// is never followed); names with `..` components or absolute names, and hard links to
// such names, are rejected and reported. Every regular file's content is hashed while it
// is written and checked against its TOC digest.
//
// Files being written are "pending": anything that would remove, replace, link to or look
// through a pending path first waits for the writes in flight (a barrier), so the result is
// the one applying the entries one by one would give.
import { execFileSync } from 'node:child_process';
import {
  chmodSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, readdirSync, readlinkSync, rmdirSync, symlinkSync, unlinkSync, utimesSync,
} from 'node:fs';
import { join } from 'node:path';
import type { Toc, TocEntry } from '../core/layer/toc.ts';
import type { FileWrite, WriteBatch, WriterPool } from './rootfs-write.ts';

const MAX_SYMLINK_HOPS = 255;

export interface Rejected {
  layer: number;
  path: string;
  reason: string;
}

/** How files are grouped into one Range request for one writer thread. */
export interface BatchLimits {
  /** Content bytes per batch (a larger single file is a batch of its own). */
  bytes: number;
  files: number;
  /** Bytes of the tar skipped between two files before a batch is cut instead. */
  gap: number;
}

export const BATCH_LIMITS: BatchLimits = { bytes: 8 * 1024 * 1024, files: 256, gap: 1024 * 1024 };

/**
 * Removes whatever is at `abs` without following it: anything but a directory is
 * unlinked, a directory is emptied the same way and removed. Not `rmSync(…, {recursive,
 * force})`: on Node 24.9.0 that silently keeps a dangling symlink (nodejs/node#61020), and
 * real images are full of them (/etc/alternatives, /etc/mtab -> /proc/mounts).
 */
function removeEntry(abs: string): void {
  const st = lstatSync(abs, { throwIfNoEntry: false });
  if (!st) return;
  if (!st.isDirectory()) return unlinkSync(abs);
  for (const name of readdirSync(abs)) removeEntry(join(abs, name));
  rmdirSync(abs);
}

const components = (path: string) => path.split('/').filter((p) => p !== '' && p !== '.');
const unsafeName = (path: string) => path.startsWith('/') || components(path).includes('..');

/** Applies layers to one root directory. */
export class Applier {
  readonly root: string;
  readonly isRoot = process.getuid?.() === 0;
  readonly rejected: Rejected[] = [];
  readonly skipped: Rejected[] = [];
  /** Directory metadata, applied last (a read-only directory would block its children). */
  readonly dirs = new Map<string, TocEntry>();
  entries = 0;
  #layer = 0;
  #url = '';
  /** Paths (relative to root) this layer created: its own whiteouts must not remove them. */
  #created = new Set<string>();
  /** Resolved parent directories; dropped whenever a symlink appears or anything is removed. */
  #resolved = new Map<string, string>();

  readonly #writers: WriterPool;
  readonly #limits: BatchLimits;
  /** The batch being filled, with the relative paths of its files. */
  #batch: { batch: WriteBatch; rels: string[]; bytes: number } | undefined;
  /** Relative paths of files not written yet (in the open batch or in flight). */
  readonly #pending = new Set<string>();
  readonly #inFlight = new Set<Promise<void>>();
  /** Each layer's batches. */
  readonly #layerWrites: Array<Array<Promise<void>>> = [];
  #failure: Error | undefined;

  constructor(root: string, writers: WriterPool, limits: BatchLimits = BATCH_LIMITS) {
    this.root = root;
    this.#writers = writers;
    this.#limits = limits;
  }

  #abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  #reject(path: string, reason: string): void {
    this.rejected.push({ layer: this.#layer, path, reason });
  }

  /** Sends the open batch to the writers. */
  #flush(): void {
    const open = this.#batch;
    if (!open) return;
    this.#batch = undefined;
    const written: Promise<void> = this.#writers.write(open.batch).finally(() => {
      for (const rel of open.rels) this.#pending.delete(rel);
      this.#inFlight.delete(written);
    });
    written.catch((e: Error) => (this.#failure ??= e));
    this.#inFlight.add(written);
    this.#layerWrites[open.batch.layer]!.push(written);
  }

  /** Waits until every file handed out so far is written. */
  async #barrier(): Promise<void> {
    this.#flush();
    while (this.#inFlight.size > 0) await Promise.all(this.#inFlight);
  }

  /** Waits for pending writes at `rel` or under it. */
  async #settle(rel: string): Promise<void> {
    if (this.#pending.size === 0) return;
    if (rel === '' || this.#pending.has(rel)) return this.#barrier();
    const prefix = `${rel}/`;
    for (const p of this.#pending) if (p.startsWith(prefix)) return this.#barrier();
  }

  async #remove(rel: string): Promise<void> {
    await this.#settle(rel);
    removeEntry(this.#abs(rel));
    this.#resolved.clear();
  }

  /**
   * Resolves a parent directory path inside root, chroot-style: symlinks are followed but
   * `/` means root and `..` stops at root. Missing directories are created. Returns the
   * path relative to root, or a reason it cannot be used, or that it runs through a file
   * not written yet.
   */
  #resolveDir(path: string): { rel: string } | { error: string } | { pending: true } {
    const cached = this.#resolved.get(path);
    if (cached !== undefined) return { rel: cached };
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
      if (this.#pending.has(candidate)) return { pending: true };
      const st = lstatSync(this.#abs(candidate), { throwIfNoEntry: false });
      if (!st) {
        mkdirSync(this.#abs(candidate), { mode: 0o755 });
        resolved.push(part);
      } else if (st.isSymbolicLink()) {
        if (++hops > MAX_SYMLINK_HOPS) return { error: 'too many levels of symbolic links' };
        const target = readlinkSync(this.#abs(candidate));
        if (target.startsWith('/')) resolved.length = 0;
        queue.unshift(...components(target));
      } else if (st.isDirectory()) {
        resolved.push(part);
      } else {
        return { error: `${candidate} is not a directory` };
      }
    }
    const rel = resolved.join('/');
    this.#resolved.set(path, rel);
    return { rel };
  }

  /** A directory resolved as #resolveDir does, after the writes it runs through. */
  async #dir(path: string): Promise<{ rel: string } | { error: string }> {
    const dir = this.#resolveDir(path);
    if (!('pending' in dir)) return dir;
    await this.#barrier();
    return this.#resolveDir(path) as { rel: string } | { error: string };
  }

  /** Where an entry's own path lands: its parent resolved safely, its name never followed. */
  async #place(path: string): Promise<string | undefined> {
    const parts = components(path);
    if (parts.length === 0) return '';
    const name = parts.pop()!;
    const parent = await this.#dir(parts.join('/'));
    if ('error' in parent) {
      this.#reject(path, parent.error);
      return undefined;
    }
    return parent.rel === '' ? name : `${parent.rel}/${name}`;
  }

  /**
   * Applies one layer's entries; its files are handed to the writers, and `written(layer)`
   * tells when they are on disk. Throws at once if a write has failed.
   */
  async apply(layer: number, toc: Toc, url: string): Promise<void> {
    this.#layer = layer;
    this.#url = url;
    this.#created = new Set();
    this.#layerWrites[layer] = [];
    for (const entry of toc.entries) {
      if (this.#failure) throw this.#failure;
      this.entries++;
      await this.#entry(entry);
    }
    this.#flush();
  }

  /** Resolves once every file of `layer` is written; rejects if one could not be. */
  async written(layer: number): Promise<void> {
    await Promise.all(this.#layerWrites[layer] ?? []);
  }

  async #entry(entry: TocEntry): Promise<void> {
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
    // Node has no setxattr: say so rather than drop them (file capabilities, SELinux labels).
    if (entry.xattrs) this.skipped.push({ layer: this.#layer, path: entry.path, reason: `extended attributes not applied: ${Object.keys(entry.xattrs).join(', ')}` });
    if (this.#pending.has(rel)) await this.#barrier();
    const existing = lstatSync(abs, { throwIfNoEntry: false });
    if (existing && !(existing.isDirectory() && entry.type === 'dir')) await this.#remove(rel);
    this.#created.add(rel);
    switch (entry.type) {
      case 'dir':
        if (!existing?.isDirectory()) mkdirSync(abs, { mode: 0o700 });
        this.dirs.set(rel, entry);
        return;
      case 'file':
        return this.#file(entry, rel, abs);
      case 'symlink':
        symlinkSync(entry.linkname!, abs);
        this.#resolved.clear();
        break;
      case 'hardlink': {
        if (unsafeName(entry.linkname!)) return this.#reject(entry.path, `hard link to ${entry.linkname} outside the root`);
        const target = await this.#place(entry.linkname!);
        if (target === undefined) return;
        if (this.#pending.has(target)) await this.#barrier();
        const st = lstatSync(this.#abs(target), { throwIfNoEntry: false });
        if (!st || st.isDirectory()) return this.#reject(entry.path, `hard link to ${entry.linkname}, which is ${st ? 'a directory' : 'missing'}`);
        linkSync(this.#abs(target), abs);
        return; // a hard link shares its target's metadata
      }
      case 'fifo':
        execFileSync('mkfifo', ['-m', (entry.mode & 0o777).toString(8), abs]);
        break;
      case 'chardev':
      case 'blockdev':
        if (!this.isRoot) {
          this.skipped.push({ layer: this.#layer, path: entry.path, reason: `${entry.type} ${entry.devmajor},${entry.devminor} needs root` });
          this.#created.delete(rel);
          return;
        }
        execFileSync('mknod', ['-m', (entry.mode & 0o7777).toString(8), abs, entry.type === 'chardev' ? 'c' : 'b', String(entry.devmajor), String(entry.devminor)]);
        break;
    }
    if (this.isRoot) lchownSync(abs, entry.uid, entry.gid);
    // chown clears set-id bits: the mode goes on after it. Symlinks have no mode of their own.
    if (entry.type !== 'symlink') chmodSync(abs, entry.mode);
    lutimesSync(abs, entry.mtime, entry.mtime);
  }

  /** Adds a regular file to the open batch (a writer creates it, checking its content hash). */
  #file(entry: TocEntry, rel: string, abs: string): void {
    const write: FileWrite = { abs, path: entry.path, offset: entry.offset, size: entry.size, digest: entry.digest!, mode: entry.mode, uid: entry.uid, gid: entry.gid, mtime: entry.mtime };
    const limits = this.#limits;
    const last = this.#batch?.batch.files.at(-1);
    // Cut the batch rather than read a long stretch of the tar that no file of it needs.
    if (last && entry.size > 0 && entry.offset - (last.offset + last.size) > limits.gap) this.#flush();
    const batch = (this.#batch ??= { batch: { layer: this.#layer, url: this.#url, files: [], empty: [], owners: this.isRoot }, rels: [], bytes: 0 });
    (entry.size === 0 ? batch.batch.empty : batch.batch.files).push(write);
    batch.rels.push(rel);
    batch.bytes += entry.size;
    this.#pending.add(rel);
    if (batch.bytes >= limits.bytes || batch.rels.length >= limits.files) this.#flush();
  }

  async #whiteout(entry: TocEntry): Promise<void> {
    const rel = await this.#place(entry.whiteout!);
    if (rel === undefined || rel === '') return;
    if (this.#created.has(rel)) return; // a lower layer's file, not this layer's replacement
    this.dirs.delete(rel);
    await this.#remove(rel);
  }

  async #opaque(entry: TocEntry): Promise<void> {
    const dir = await this.#dir(entry.opaque!);
    if ('error' in dir) return this.#reject(entry.path, dir.error);
    await this.#settle(dir.rel);
    for (const name of readdirSync(this.#abs(dir.rel))) {
      const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
      if (this.#created.has(rel)) continue;
      this.dirs.delete(rel);
      await this.#remove(rel);
    }
  }

  /** After every write: directory modes, owners and times, deepest first. */
  async finish(): Promise<void> {
    await this.#barrier();
    const dirs = [...this.dirs].sort((a, b) => b[0].length - a[0].length);
    for (const [rel, entry] of dirs) {
      const abs = this.#abs(rel);
      if (!lstatSync(abs, { throwIfNoEntry: false })?.isDirectory()) continue;
      if (this.isRoot) lchownSync(abs, entry.uid, entry.gid);
      chmodSync(abs, entry.mode);
      utimesSync(abs, entry.mtime, entry.mtime);
    }
  }
}
