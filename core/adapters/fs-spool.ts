import { mkdir, open, readdir, rename, rm, rmdir, stat, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { Spool, SpoolWriter } from '../ports/spool.ts';
import type { Leftover } from '../ports/blob-store.ts';

/** Whether process `pid` runs on this host (signal 0 tests, sends nothing). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** How long an entry a dead process left stays to be resumed from before a start removes it. */
const ORPHAN_MS = 24 * 3600 * 1000;

const hostPart = () => hostname().replace(/[^A-Za-z0-9.-]/g, '_');

/**
 * The spool in a directory: one file per transfer, removed when it ends. A process that
 * is killed leaves its entries behind: the next transfer of the same blob on this host
 * resumes from one (`adopt`), and a start removes those older than a day.
 */
export class FilesystemSpool implements Spool {
  /**
   * This process's spool under `root` (DATA_DIR/spool/<host>-<pid>), after removing what
   * processes of this host that are gone left a day ago or more. Several servers may share
   * DATA_DIR; each sweeps only the dead.
   */
  static async forProcess(root: string): Promise<FilesystemSpool> {
    const spool = new FilesystemSpool(join(root, `${hostPart()}-${process.pid}`), root);
    await spool.leftovers(Date.now() - ORPHAN_MS, false);
    return spool;
  }

  async leftovers(before: number, dryRun: boolean): Promise<Leftover[]> {
    const found: Leftover[] = [];
    for await (const o of this.#orphans('')) {
      if (o.modifiedAt >= before) continue;
      if (!dryRun) await rm(o.path, { force: true });
      found.push({ kind: 'spool', key: relative(this.#root ?? this.#dir, o.path), bytes: o.size });
    }
    // A dead process's directory goes once it is empty (rmdir refuses otherwise).
    if (!dryRun) for (const dir of await this.#deadDirs()) await rmdir(dir).catch(() => {});
    return found;
  }

  readonly #dir: string;
  /** Where the spools of every process of DATA_DIR are (undefined: this one only). */
  readonly #root: string | undefined;
  readonly #readers = new Map<string, Promise<FileHandle>>();

  constructor(dir: string, root?: string) {
    this.#dir = dir;
    this.#root = root;
  }

  /** The spool directories of processes of this host that are gone. */
  async #deadDirs(): Promise<string[]> {
    if (!this.#root) return [];
    const host = hostPart();
    const dirs: string[] = [];
    for (const name of await readdir(this.#root).catch(() => [] as string[])) {
      const pid = name.startsWith(`${host}-`) ? Number(name.slice(host.length + 1)) : NaN;
      if (Number.isSafeInteger(pid) && pid !== process.pid && !alive(pid)) dirs.push(join(this.#root, name));
    }
    return dirs;
  }

  /** The entries whose id starts with `prefix` in the spools of processes of this host that are gone. */
  async *#orphans(prefix: string): AsyncGenerator<{ path: string; size: number; modifiedAt: number }> {
    for (const dir of await this.#deadDirs()) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (!name.startsWith(prefix)) continue;
        const info = await stat(join(dir, name)).catch(() => undefined);
        if (info?.isFile()) yield { path: join(dir, name), size: info.size, modifiedAt: info.mtimeMs };
      }
    }
  }

  async adopt(prefix: string, id: string): Promise<{ writer: SpoolWriter; size: number } | undefined> {
    const found: Array<{ path: string; size: number }> = [];
    for await (const o of this.#orphans(prefix)) found.push(o);
    found.sort((a, b) => b.size - a.size);
    const [largest, ...others] = found;
    for (const o of others) await rm(o.path, { force: true });
    if (!largest) return undefined;
    await mkdir(this.#dir, { recursive: true });
    // A rename: only one process gets it (the other sees ENOENT).
    const taken = await rename(largest.path, this.#path(id)).then(
      () => true,
      () => false,
    );
    await rmdir(dirname(largest.path)).catch(() => {});
    if (!taken) return undefined;
    return { writer: await this.#writer(id, 'a'), size: largest.size };
  }

  #path(id: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(id)) throw new Error(`invalid spool id: ${JSON.stringify(id)}`);
    return join(this.#dir, id);
  }

  async create(id: string): Promise<SpoolWriter> {
    await mkdir(this.#dir, { recursive: true });
    return this.#writer(id, 'w');
  }

  async #writer(id: string, flags: 'w' | 'a'): Promise<SpoolWriter> {
    const path = this.#path(id);
    const file = await open(path, flags);
    let closed = false;
    return {
      write: async (chunk) => {
        await file.write(chunk);
      },
      remove: async () => {
        if (!closed) (closed = true), await file.close().catch(() => {});
        const reader = this.#readers.get(id);
        this.#readers.delete(id);
        if (reader) await (await reader.catch(() => undefined))?.close().catch(() => {});
        await rm(path, { force: true });
      },
    };
  }

  async read(id: string, start: number, end: number): Promise<Uint8Array> {
    let handle = this.#readers.get(id);
    if (!handle) {
      handle = open(this.#path(id), 'r');
      this.#readers.set(id, handle);
    }
    const buffer = Buffer.allocUnsafe(end - start);
    let done = 0;
    const fh = await handle;
    while (done < buffer.length) {
      const { bytesRead } = await fh.read(buffer, done, buffer.length - done, start + done);
      if (bytesRead === 0) throw new Error(`spool ${id} ends at ${start + done}, before ${end}`);
      done += bytesRead;
    }
    return buffer;
  }
}
