import { createReadStream } from 'node:fs';
import { access, constants, mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { dirname, join, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { verifyingStream } from '../oci/digest.ts';
import type { BlobStore, ByteRange, Leftover, ListedObject, PutOptions, Staging, StoredObject } from '../ports/blob-store.ts';
import { StoreUnavailableError } from '../oci/errors.ts';
import { streamOf } from '../streams.ts';

const READ_CHUNK_BYTES = 1024 * 1024;

/**
 * Blob store on a local directory: the embedded default. Writes go to a temp file in the
 * same filesystem, are fsynced, verified, then renamed into place, so a crash leaves at
 * most a temp file and never a partial object under a final key.
 */
export class FilesystemBlobStore implements BlobStore {
  readonly #root: string;
  readonly #tmp: string;
  readonly #staging: string;

  constructor(root: string) {
    this.#root = resolve(root);
    this.#tmp = join(this.#root, '.tmp');
    this.#staging = join(this.#root, '.staging');
  }

  /** One file per key being written, in the store's directory: every process sharing it reads it as it grows. */
  staging(key: string): Staging {
    const final = this.#path(key);
    return new FilesystemStaging(join(this.#staging, key.replaceAll('/', '_')), final);
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
    return { body: openedWhenRead(() => Readable.toWeb(createReadStream(path, { start, end, highWaterMark: READ_CHUNK_BYTES })) as ReadableStream<Uint8Array>), length, file: { path, start, end } };
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

  async *leftovers(before: number, dryRun: boolean): AsyncIterable<Leftover> {
    for (const [dir, kind] of [[this.#tmp, 'temporary'], [this.#staging, 'staging']] as const) {
      for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
        const path = join(dir, name);
        const s = await stat(path).catch(() => undefined);
        if (!s?.isFile() || s.mtimeMs >= before) continue;
        if (!dryRun) await rm(path, { force: true });
        yield { kind, key: `${dir === this.#tmp ? '.tmp' : '.staging'}/${name}`, bytes: s.size };
      }
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

const ENOENT = (e: unknown) => (e as NodeJS.ErrnoException).code === 'ENOENT';

/**
 * A staged write as a file that grows in place (`.staging/<key>`): readable by any
 * process as soon as a write returns, and renamed under its key on commit, so the
 * verified bytes are written once. After a crash the file's length is the durable
 * offset; the next writer re-reads (re-hashes) it before resuming.
 */
class FilesystemStaging implements Staging {
  readonly immediate = true;
  readonly #path: string;
  readonly #final: string;
  #file: FileHandle | undefined;
  #reader: Promise<FileHandle> | undefined;
  #readable = 0;

  constructor(path: string, final: string) {
    this.#path = path;
    this.#final = final;
  }

  get readable(): number {
    return this.#readable;
  }

  async length(): Promise<number> {
    return stat(this.#path).then(
      (s) => s.size,
      (e) => (ENOENT(e) ? 0 : Promise.reject(e)),
    );
  }

  async read(start: number, end: number): Promise<ReadableStream<Uint8Array> | undefined> {
    if (end <= start) return new ReadableStream({ start: (c) => c.close() });
    // One handle per reader, kept open: a rename on commit leaves it valid (same file). A
    // reader that comes after the commit reads the published object.
    this.#reader ??= open(this.#path, 'r').catch((e) => (ENOENT(e) ? open(this.#final, 'r') : Promise.reject(e)));
    const fh = await this.#reader.catch((e) => (ENOENT(e) ? undefined : Promise.reject(e)));
    if (!fh) {
      this.#reader = undefined;
      return undefined;
    }
    return streamOf(preads(fh, start, end));
  }

  async open(): Promise<number> {
    await mkdir(dirname(this.#path), { recursive: true });
    this.#file = await open(this.#path, 'a');
    this.#readable = (await this.#file.stat()).size;
    // The writer's readers (clients of this process) keep reading this file after the commit.
    this.#reader = open(this.#path, 'r');
    return this.#readable;
  }

  #writer(): FileHandle {
    if (!this.#file) throw new Error('staging not open');
    return this.#file;
  }

  async append(bytes: Uint8Array): Promise<void> {
    const file = this.#writer();
    let done = 0;
    while (done < bytes.byteLength) done += (await file.write(bytes, done, bytes.byteLength - done)).bytesWritten;
    this.#readable += bytes.byteLength;
  }

  async truncate(length: number): Promise<void> {
    if (length > this.#readable) throw new Error(`cannot truncate staging of ${this.#readable} bytes to ${length}`);
    await this.#writer().truncate(length);
    this.#readable = length;
  }

  async commit(): Promise<void> {
    const file = this.#writer();
    await file.sync();
    await file.close();
    this.#file = undefined;
    await mkdir(dirname(this.#final), { recursive: true });
    await rename(this.#path, this.#final);
  }

  async discard(): Promise<void> {
    await this.#file?.close().catch(() => {});
    this.#file = undefined;
    await rm(this.#path, { force: true });
  }

  /** Every append is readable at once: nothing to ask for. */
  async follow(): Promise<void> {}

  async close(): Promise<void> {
    await this.#file?.close().catch(() => {});
    this.#file = undefined;
    await this.#closeReader();
  }

  async #closeReader(): Promise<void> {
    const reader = this.#reader;
    this.#reader = undefined;
    await (await reader?.catch(() => undefined))?.close().catch(() => {});
  }
}

/** Bytes `[start, end)` of an open file in positional reads of 256 KiB (the handle stays open). */
async function* preads(fh: FileHandle, start: number, end: number): AsyncGenerator<Uint8Array> {
  for (let at = start; at < end; ) {
    const buffer = Buffer.allocUnsafe(Math.min(256 * 1024, end - at));
    const { bytesRead } = await fh.read(buffer, 0, buffer.length, at);
    if (bytesRead === 0) throw new Error(`staged file ends at ${at}, before ${end}`);
    at += bytesRead;
    yield buffer.subarray(0, bytesRead);
  }
}

/** A stream that opens its source at the first read: a body sent another way (StoredObject.file) costs no descriptor. */
function openedWhenRead(open: () => ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  let reader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        reader ??= open().getReader();
        const { done, value } = await reader.read();
        if (done) controller.close();
        else controller.enqueue(value);
      },
      cancel: (reason) => reader?.cancel(reason),
    },
    { highWaterMark: 0 },
  );
}
