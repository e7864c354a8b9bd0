import { mkdir, open, readdir, rm, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Spool, SpoolWriter } from '../ports/spool.ts';

/** Whether process `pid` runs on this host (signal 0 tests, sends nothing). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The spool in a directory: one file per transfer, removed when it ends. */
export class FilesystemSpool implements Spool {
  /**
   * This process's spool under `root` (DATA_DIR/spool/<host>-<pid>), after removing the
   * spools of processes of this host that are gone (killed mid-transfer: nothing else
   * would remove them). Several servers may share DATA_DIR; each sweeps only the dead.
   */
  static async forProcess(root: string): Promise<FilesystemSpool> {
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '_');
    const names = await readdir(root).catch(() => [] as string[]);
    for (const name of names) {
      const pid = name.startsWith(`${host}-`) ? Number(name.slice(host.length + 1)) : NaN;
      if (Number.isSafeInteger(pid) && pid !== process.pid && !alive(pid)) await rm(join(root, name), { recursive: true, force: true });
    }
    return new FilesystemSpool(join(root, `${host}-${process.pid}`));
  }

  readonly #dir: string;
  readonly #readers = new Map<string, Promise<FileHandle>>();

  constructor(dir: string) {
    this.#dir = dir;
  }

  #path(id: string): string {
    if (!/^[A-Za-z0-9._-]+$/.test(id)) throw new Error(`invalid spool id: ${JSON.stringify(id)}`);
    return join(this.#dir, id);
  }

  async create(id: string): Promise<SpoolWriter> {
    await mkdir(this.#dir, { recursive: true });
    const path = this.#path(id);
    const file = await open(path, 'w');
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
