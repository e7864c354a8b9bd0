import { createReadStream } from 'node:fs';
import { access, constants, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { verifyingStream } from '../oci/digest.ts';
import type { BlobStore, ByteRange, ListedObject, PutOptions, StoredObject } from '../ports/blob-store.ts';
import { StoreUnavailableError } from '../oci/errors.ts';

const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * Blob store on a local directory: the embedded default. Writes go to a temp file in the
 * same filesystem, are fsynced, verified, then renamed into place, so a crash leaves at
 * most a temp file and never a partial object under a final key.
 */
export class FilesystemBlobStore implements BlobStore {
  readonly #root: string;
  readonly #tmp: string;

  constructor(root: string) {
    this.#root = resolve(root);
    this.#tmp = join(this.#root, '.tmp');
  }

  #path(key: string): string {
    const path = resolve(this.#root, key);
    if (!path.startsWith(this.#root + sep) || key.split('/').some((p) => p === '' || p === '.' || p === '..' || p.startsWith('.'))) {
      throw new Error(`invalid storage key: ${JSON.stringify(key)}`);
    }
    return path;
  }

  async check(): Promise<void> {
    try {
      await mkdir(this.#tmp, { recursive: true });
      await access(this.#tmp, constants.W_OK);
    } catch (e) {
      throw new StoreUnavailableError('DATA_DIR', `cannot write the store directory (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { path: this.#root }, e);
    }
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    try {
      const s = await stat(this.#path(key));
      return s.isFile() ? { size: s.size } : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async get(key: string, range?: ByteRange): Promise<StoredObject | undefined> {
    const path = this.#path(key);
    const size = (await this.stat(key))?.size;
    if (size === undefined) return undefined;
    const start = range?.start ?? 0;
    const end = range?.end ?? size - 1;
    const length = Math.max(0, end - start + 1);
    if (length === 0) return { body: new ReadableStream({ start: (c) => c.close() }), length };
    const stream = createReadStream(path, { start, end, highWaterMark: READ_CHUNK_BYTES });
    return { body: Readable.toWeb(stream) as ReadableStream<Uint8Array>, length };
  }

  async put(key: string, body: ReadableStream<Uint8Array>, options: PutOptions = {}): Promise<{ size: number }> {
    const path = this.#path(key);
    await mkdir(this.#tmp, { recursive: true });
    const tmp = join(this.#tmp, randomUUID());
    const file = await open(tmp, 'wx');
    let size = 0;
    try {
      const source = options.expected ? body.pipeThrough(verifyingStream(options.expected)) : body;
      for await (const chunk of source) {
        await file.write(chunk);
        size += chunk.byteLength;
      }
      await file.sync();
      await file.close();
      await mkdir(dirname(path), { recursive: true });
      await rename(tmp, path);
      return { size };
    } catch (e) {
      await file.close().catch(() => {});
      await rm(tmp, { force: true });
      throw e;
    }
  }

  async *list(prefix: string): AsyncIterable<ListedObject> {
    yield* this.#walk('', prefix);
  }

  /** Keys under directory `dir` (relative, '' for the root) that start with `prefix`, in key order. */
  async *#walk(dir: string, prefix: string): AsyncIterable<ListedObject> {
    let names: string[];
    try {
      names = (await readdir(join(this.#root, dir))).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' || (e as NodeJS.ErrnoException).code === 'ENOTDIR') return;
      throw e;
    }
    for (const name of names) {
      // Dot names (the temp directory) are never keys.
      if (name.startsWith('.')) continue;
      const key = dir === '' ? name : `${dir}/${name}`;
      // Only descend where the prefix can still match.
      if (!key.startsWith(prefix) && !prefix.startsWith(`${key}/`)) continue;
      const s = await stat(join(this.#root, key)).catch(() => undefined);
      if (s?.isDirectory()) yield* this.#walk(key, prefix);
      else if (s?.isFile() && key.startsWith(prefix)) yield { key, size: s.size, modifiedAt: s.mtimeMs };
    }
  }

  async delete(key: string): Promise<void> {
    await rm(this.#path(key), { force: true });
  }

  async presign(): Promise<string | undefined> {
    return undefined;
  }
}
