// The apply step of `pullthrough rootfs`, on a worker thread of its own while the main
// thread downloads: layers in order, OCI whiteout semantics, driven by each layer's TOC.
//
// Hostile layers: every path is resolved inside the root as if it were `/` (symlinks in
// parent directories are followed within the root, never out of it; the final component
// is never followed); names with `..` components or absolute names, and hard links to
// such names, are rejected and reported. Every regular file's content is hashed while it
// is written and checked against its TOC digest.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  chmodSync, closeSync, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync,
  mkdirSync, openSync, readdirSync, readlinkSync, readSync, rmSync, symlinkSync, utimesSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { Toc, TocEntry } from '../core/toc.ts';

const COPY_BUFFER_BYTES = 1024 * 1024;
const MAX_SYMLINK_HOPS = 255;

export interface Rejected {
  layer: number;
  path: string;
  reason: string;
}

/** A layer that cannot be applied as it claims (a file whose content is not its TOC's). */
export class ApplyError extends Error {}

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
  /** Paths (relative to root) this layer created: its own whiteouts must not remove them. */
  #created = new Set<string>();
  /** Resolved parent directories; dropped whenever a symlink appears or anything is removed. */
  #resolved = new Map<string, string>();

  /** Bytes of each layer's temp file written so far (-1: its download failed), shared with the downloader. */
  readonly #written: BigInt64Array | undefined;

  constructor(root: string, written?: BigInt64Array) {
    this.root = root;
    this.#written = written;
  }

  /**
   * How far the current layer's file is written, once it reaches `position` (waiting for
   * the downloader when it has not: layers are applied while they download).
   */
  #availableFrom(position: number): number {
    if (!this.#written) return Number.MAX_SAFE_INTEGER;
    for (;;) {
      const have = Atomics.load(this.#written, this.#layer);
      if (have < 0n) throw new ApplyError('the layer download failed');
      if (have > BigInt(position)) return Number(have);
      Atomics.wait(this.#written, this.#layer, have, 1000);
    }
  }

  #abs(rel: string): string {
    return rel === '' ? this.root : join(this.root, rel);
  }

  #reject(path: string, reason: string): void {
    this.rejected.push({ layer: this.#layer, path, reason });
  }

  #remove(rel: string): void {
    rmSync(this.#abs(rel), { recursive: true, force: true });
    this.#resolved.clear();
  }

  /**
   * Resolves a parent directory path inside root, chroot-style: symlinks are followed but
   * `/` means root and `..` stops at root. Missing directories are created. Returns the
   * path relative to root, or a reason it cannot be used.
   */
  #resolveDir(path: string): { rel: string } | { error: string } {
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

  /** Where an entry's own path lands: its parent resolved safely, its name never followed. */
  #place(path: string): string | undefined {
    const parts = components(path);
    if (parts.length === 0) return '';
    const name = parts.pop()!;
    const parent = this.#resolveDir(parts.join('/'));
    if ('error' in parent) {
      this.#reject(path, parent.error);
      return undefined;
    }
    return parent.rel === '' ? name : `${parent.rel}/${name}`;
  }

  /**
   * Applies one layer. File system calls are synchronous: with thousands of small files,
   * a thread-pool round trip per call would dominate. (This runs on its own thread.)
   */
  apply(layer: number, tarFile: string, toc: Toc): void {
    this.#layer = layer;
    this.#created = new Set();
    const tar = openSync(tarFile, 'r');
    const buffer = Buffer.allocUnsafe(COPY_BUFFER_BYTES);
    try {
      for (const entry of toc.entries) {
        this.entries++;
        this.#entry(entry, tar, buffer);
      }
    } finally {
      closeSync(tar);
    }
  }

  #entry(entry: TocEntry, tar: number, buffer: Buffer): void {
    if (unsafeName(entry.path)) return this.#reject(entry.path, entry.path.startsWith('/') ? 'absolute path' : 'path leaves the root through ..');
    if (entry.opaque !== undefined) return this.#opaque(entry);
    if (entry.whiteout !== undefined) return this.#whiteout(entry);
    const rel = this.#place(entry.path);
    if (rel === undefined) return;
    const abs = this.#abs(rel);
    if (rel === '') {
      if (entry.type === 'dir') this.dirs.set('', entry);
      else this.#reject(entry.path, 'the root can only be a directory');
      return;
    }
    const existing = lstatSync(abs, { throwIfNoEntry: false });
    if (existing && !(existing.isDirectory() && entry.type === 'dir')) this.#remove(rel);
    this.#created.add(rel);
    switch (entry.type) {
      case 'dir':
        if (!existing?.isDirectory()) mkdirSync(abs, { mode: 0o700 });
        this.dirs.set(rel, entry);
        return;
      case 'file':
        return this.#file(entry, abs, tar, buffer);
      case 'symlink':
        symlinkSync(entry.linkname!, abs);
        this.#resolved.clear();
        break;
      case 'hardlink': {
        if (unsafeName(entry.linkname!)) return this.#reject(entry.path, `hard link to ${entry.linkname} outside the root`);
        const target = this.#place(entry.linkname!);
        if (target === undefined) return;
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

  /** Copies the file's bytes out of the layer tar, hashing them against the TOC. */
  #file(entry: TocEntry, abs: string, tar: number, buffer: Buffer): void {
    const out = openSync(abs, 'wx', 0o600);
    const hash = createHash('sha256');
    try {
      let done = 0;
      while (done < entry.size) {
        const position = entry.offset + done;
        const want = Math.min(buffer.length, entry.size - done, this.#availableFrom(position) - position);
        const bytesRead = readSync(tar, buffer, 0, want, position);
        if (bytesRead === 0) throw new ApplyError(`${entry.path}: the layer tar ends inside the file`);
        const chunk = buffer.subarray(0, bytesRead);
        hash.update(chunk);
        for (let written = 0; written < bytesRead; ) written += writeSync(out, chunk, written);
        done += bytesRead;
      }
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== entry.digest) throw new ApplyError(`${entry.path}: content ${actual} does not match the TOC's ${entry.digest}`);
      if (this.isRoot) fchownSync(out, entry.uid, entry.gid);
      fchmodSync(out, entry.mode);
      futimesSync(out, entry.mtime, entry.mtime);
    } finally {
      closeSync(out);
    }
  }

  #whiteout(entry: TocEntry): void {
    const rel = this.#place(entry.whiteout!);
    if (rel === undefined || rel === '') return;
    if (this.#created.has(rel)) return; // a lower layer's file, not this layer's replacement
    this.dirs.delete(rel);
    this.#remove(rel);
  }

  #opaque(entry: TocEntry): void {
    const dir = this.#resolveDir(entry.opaque!);
    if ('error' in dir) return this.#reject(entry.path, dir.error);
    for (const name of readdirSync(this.#abs(dir.rel))) {
      const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
      if (this.#created.has(rel)) continue;
      this.dirs.delete(rel);
      this.#remove(rel);
    }
  }

  /** Directory modes, owners and times, deepest first. */
  finish(): void {
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


/** Messages between the main thread and the apply thread. */
export type ApplyRequest = { layer: number; tarFile: string; toc: Toc } | { finish: true };
export type ApplyReply =
  | { layer: number }
  | { finished: { entries: number; rejected: Rejected[]; skipped: Rejected[] } }
  | { error: string };

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'pullthrough-apply') {
  const { root, written } = workerData as { root: string; written: BigInt64Array };
  const applier = new Applier(root, written);
  parentPort!.on('message', (request: ApplyRequest) => {
    try {
      if ('finish' in request) {
        applier.finish();
        parentPort!.postMessage({ finished: { entries: applier.entries, rejected: applier.rejected, skipped: applier.skipped } } satisfies ApplyReply);
      } else {
        applier.apply(request.layer, request.tarFile, request.toc);
        parentPort!.postMessage({ layer: request.layer } satisfies ApplyReply);
      }
    } catch (e) {
      parentPort!.postMessage({ error: (e as Error).message } satisfies ApplyReply);
    }
  });
}
