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
  mkdirSync, openSync, readdirSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { isMainThread, parentPort, receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import type { Toc, TocEntry } from '../core/toc.ts';

const MAX_SYMLINK_HOPS = 255;

export interface Rejected {
  layer: number;
  path: string;
  reason: string;
}

/** A chunk of a layer's tar, or the reason its download failed, sent by the downloader. */
export type LayerMessage = { layer: number; chunk: Uint8Array } | { layer: number; error: string };

/**
 * The layers' bytes as they arrive from the downloader (main thread) over a message port,
 * read synchronously in order. Reading past what has arrived waits (`Atomics.wait` on a
 * counter the downloader bumps per message); what is read is released and reported in
 * `consumed`, which the downloader uses to stay at most a window ahead.
 */
export class LayerBytes {
  readonly #port: MessagePort;
  readonly #posted: Int32Array;
  readonly #consumed: BigInt64Array;
  readonly #layers = new Map<number, { chunks: Uint8Array[]; start: number; error?: string }>();
  readonly #applied = new Set<number>();

  constructor(port: MessagePort, posted: Int32Array, consumed: BigInt64Array) {
    this.#port = port;
    this.#posted = posted;
    this.#consumed = consumed;
  }

  #queue(layer: number) {
    let q = this.#layers.get(layer);
    if (!q) this.#layers.set(layer, (q = { chunks: [], start: 0 }));
    return q;
  }

  /** Takes one message off the port, waiting for one when there is none. */
  #receive(): void {
    const seen = Atomics.load(this.#posted, 0);
    const received = receiveMessageOnPort(this.#port);
    if (!received) {
      Atomics.wait(this.#posted, 0, seen, 1000);
      return;
    }
    const message = received.message as LayerMessage;
    if (this.#applied.has(message.layer)) return; // the tar's tail (end blocks) after its last entry
    const q = this.#queue(message.layer);
    if ('error' in message) q.error = message.error;
    else q.chunks.push(message.chunk);
  }

  /** Up to `max` bytes of `layer` from `position` on (positions only grow), waiting for them. */
  read(layer: number, position: number, max: number): Uint8Array {
    for (;;) {
      const q = this.#queue(layer);
      while (q.chunks.length > 0 && q.start + q.chunks[0]!.length <= position) {
        q.start += q.chunks.shift()!.length;
        Atomics.store(this.#consumed, layer, BigInt(q.start));
        Atomics.notify(this.#consumed, layer);
      }
      const first = q.chunks[0];
      if (first && q.start <= position) return first.subarray(position - q.start, position - q.start + max);
      if (q.error !== undefined) throw new ApplyError(q.error);
      this.#receive();
    }
  }

  /** The layer is applied: drop what is left of it and let its download run free. */
  done(layer: number): void {
    this.#applied.add(layer);
    this.#layers.delete(layer);
    Atomics.store(this.#consumed, layer, BigInt(Number.MAX_SAFE_INTEGER));
    Atomics.notify(this.#consumed, layer);
  }
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

  readonly #source: LayerBytes;

  constructor(root: string, source: LayerBytes) {
    this.root = root;
    this.#source = source;
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
  apply(layer: number, toc: Toc): void {
    this.#layer = layer;
    this.#created = new Set();
    try {
      for (const entry of toc.entries) {
        this.entries++;
        this.#entry(entry);
      }
    } finally {
      this.#source.done(layer);
    }
  }

  #entry(entry: TocEntry): void {
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
        return this.#file(entry, abs);
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
  #file(entry: TocEntry, abs: string): void {
    const out = openSync(abs, 'wx', 0o600);
    const hash = createHash('sha256');
    try {
      let done = 0;
      while (done < entry.size) {
        const chunk = this.#source.read(this.#layer, entry.offset + done, entry.size - done);
        hash.update(chunk);
        for (let written = 0; written < chunk.length; ) written += writeSync(out, chunk, written);
        done += chunk.length;
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
export type ApplyRequest = { layer: number; toc: Toc } | { finish: true };
export type ApplyReply =
  | { layer: number }
  | { finished: { entries: number; rejected: Rejected[]; skipped: Rejected[] } }
  | { error: string };

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'pullthrough-apply') {
  const { root, port, posted, consumed } = workerData as { root: string; port: MessagePort; posted: Int32Array; consumed: BigInt64Array };
  const applier = new Applier(root, new LayerBytes(port, posted, consumed));
  parentPort!.on('message', (request: ApplyRequest) => {
    try {
      if ('finish' in request) {
        applier.finish();
        parentPort!.postMessage({ finished: { entries: applier.entries, rejected: applier.rejected, skipped: applier.skipped } } satisfies ApplyReply);
      } else {
        applier.apply(request.layer, request.toc);
        parentPort!.postMessage({ layer: request.layer } satisfies ApplyReply);
      }
    } catch (e) {
      parentPort!.postMessage({ error: (e as Error).message } satisfies ApplyReply);
    }
  });
}
