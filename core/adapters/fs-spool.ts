import { mkdir, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Spool, SpoolWriter } from '../ports/spool.ts';

/** The spool in a directory (DATA_DIR/spool): one file per transfer, removed when it ends. */
export class FilesystemSpool implements Spool {
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
