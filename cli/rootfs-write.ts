// The writer threads of `pullthrough rootfs`. Each takes a batch of regular files that lie
// one after another in a layer tar, fetches that byte range with one HTTP Range request,
// and writes the files as their bytes arrive, hashing each against its TOC digest. Several
// writers run at once, so downloads, hashing and file creation use every core (on some
// file systems creating an inode costs more CPU than writing its data).
//
// The apply step (workers/rootfs-apply.ts, on the main thread) has already placed every
// path safely inside the root; a writer only creates new files there (O_EXCL, never
// following a symlink).
import { createHash } from 'node:crypto';
import { closeSync, constants, fchmodSync, fchownSync, futimesSync, openSync, writeSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { RangeGetter } from './range-get.ts';

/** A regular file to create, its content at [offset, offset + size) of the layer tar. */
export interface FileWrite {
  /** Absolute path, its parent already resolved inside the root. */
  abs: string;
  /** The member's path in the layer, for messages. */
  path: string;
  offset: number;
  size: number;
  digest: string;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
}

export interface WriteBatch {
  layer: number;
  url: string;
  /** In tar order (offsets ascending), none of them empty. */
  files: FileWrite[];
  /** Empty files: created without reading anything. */
  empty: FileWrite[];
  /** Apply owners (only when running as root). */
  owners: boolean;
}

export type WriteReply = { done: true } | { error: string };
/** What the pool sends a writer thread: a batch, or fresh layer tar URLs by layer. */
type ToWriter = WriteBatch | { urls: string[] };

const MAX_REDIRECTS = 5;
/** This thread's kept-alive connections for Range reads over plain http. */
const ranges = new RangeGetter();
const agents = { 'http:': new http.Agent({ keepAlive: true }), 'https:': new https.Agent({ keepAlive: true }) };

/**
 * GET with node:http(s) and keep-alive, following redirects (a pullthrough URL may send
 * it to the bucket). Used for every request of rootfs: loading fetch (undici) alone
 * costs a CLI process ~40 ms.
 */
export function get(url: string, headers: Record<string, string> = {}, redirects = MAX_REDIRECTS): Promise<http.IncomingMessage> {
  const protocol = new URL(url).protocol as 'http:' | 'https:';
  const client = protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    client
      .get(url, { agent: agents[protocol], headers }, (res) => {
        const location = res.headers.location;
        if (res.statusCode && res.statusCode >= 300 && res.statusCode < 400 && location && redirects > 0) {
          res.resume();
          resolve(get(new URL(location, url).href, headers, redirects - 1));
        } else resolve(res);
      })
      .on('error', reject);
  });
}

/** A whole response body (plans, TOCs, error messages). */
export async function bodyOf(res: http.IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** A layer's content did not match its TOC, or it could not be read. */
class WriteError extends Error {}

/** Writes the files of one batch from the bytes of its range, in order. */
class BatchWriter {
  readonly #files: FileWrite[];
  readonly #owners: boolean;
  #next = 0;
  #fd = -1;
  #hash = createHash('sha256');
  /** Tar offset of the next byte to arrive: the first file's, unless `startAt` says otherwise. */
  #position: number;

  constructor(batch: WriteBatch) {
    this.#files = batch.files;
    this.#owners = batch.owners;
    this.#position = batch.files[0]?.offset ?? 0;
  }

  /** The bytes to come start at `position` of the tar (a server that ignored Range sends it all). */
  startAt(position: number): void {
    this.#position = position;
  }

  get complete(): boolean {
    return this.#next === this.#files.length;
  }

  /** The file the next bytes are for. */
  get waiting(): string | undefined {
    return this.#files[this.#next]?.path;
  }

  push(chunk: Uint8Array): void {
    let at = 0;
    while (at < chunk.length && this.#next < this.#files.length) {
      const file = this.#files[this.#next]!;
      if (this.#position < file.offset) {
        const skip = Math.min(file.offset - this.#position, chunk.length - at);
        at += skip;
        this.#position += skip;
        continue;
      }
      if (this.#fd < 0) {
        this.#fd = create(file.abs);
        this.#hash = createHash('sha256');
      }
      const piece = chunk.subarray(at, at + Math.min(file.offset + file.size - this.#position, chunk.length - at));
      this.#hash.update(piece);
      for (let written = 0; written < piece.length; ) written += writeSync(this.#fd, piece, written);
      at += piece.length;
      this.#position += piece.length;
      if (this.#position === file.offset + file.size) {
        const fd = this.#fd;
        this.#fd = -1;
        this.#next++;
        finish(fd, file, `sha256:${this.#hash.digest('hex')}`, this.#owners);
      }
    }
  }

  close(): void {
    if (this.#fd >= 0) closeSync(this.#fd);
    this.#fd = -1;
  }
}

const create = (abs: string) => openSync(abs, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);

/** Checks the content hash and applies owner (chown clears set-id bits, so first), mode and time. */
function finish(fd: number, file: FileWrite, digest: string, owners: boolean): void {
  try {
    if (digest !== file.digest) throw new WriteError(`${file.path}: content ${digest} does not match the TOC's ${file.digest}`);
    if (owners) fchownSync(fd, file.uid, file.gid);
    fchmodSync(fd, file.mode);
    futimesSync(fd, file.mtime, file.mtime);
  } finally {
    closeSync(fd);
  }
}

export async function writeBatch(batch: WriteBatch, downloaded?: (bytes: number) => void): Promise<void> {
  for (const file of batch.empty) finish(create(file.abs), file, file.digest, batch.owners);
  if (batch.files.length === 0) return;
  const start = batch.files[0]!.offset;
  const last = batch.files.at(-1)!;
  const end = last.offset + last.size;
  const writer = new BatchWriter(batch);
  const feed = (bytes: Uint8Array) => {
    writer.push(bytes);
    downloaded?.(bytes.length);
  };
  try {
    // Plain http: read into one reused buffer (workers/range-get.ts); otherwise node:http.
    if (!(await ranges.read(new URL(batch.url), start, end, feed))) await readWithNodeHttp(batch.url, start, end, writer, feed);
    if (!writer.complete) throw new WriteError(`the layer tar ended before ${writer.waiting} was complete`);
  } finally {
    writer.close();
  }
}

/** Feeds bytes [start, end) of `url` through node:http (redirects, https, odd servers). */
async function readWithNodeHttp(url: string, start: number, end: number, writer: BatchWriter, feed: (bytes: Uint8Array) => void): Promise<void> {
  const res = await get(url, { range: `bytes=${start}-${end - 1}` });
  const range = /^bytes (\d+)-/.exec(res.headers['content-range'] ?? '');
  if (!(res.statusCode === 206 && Number(range?.[1]) === start) && res.statusCode !== 200) {
    const body = (await bodyOf(res)).toString('utf8', 0, 300);
    throw new WriteError(`layer tar ${res.statusCode === 206 ? `answered the range ${res.headers['content-range']}` : `answered ${res.statusCode}`}: ${body}`);
  }
  // A server that ignores Range sends the whole tar: read up to the batch's end.
  const whole = res.statusCode === 200;
  if (whole) writer.startAt(0);
  try {
    // 'data' events rather than async iteration: no promise per chunk.
    await new Promise<void>((resolve, reject) => {
      res.on('data', (chunk: Uint8Array) => {
        try {
          feed(chunk);
          if (whole && writer.complete) resolve();
        } catch (e) {
          reject(e);
          res.destroy();
        }
      });
      res.on('end', resolve);
      res.on('error', reject);
      res.on('aborted', () => reject(new WriteError('the layer tar download was cut')));
    });
  } finally {
    if (!res.complete) res.destroy();
  }
}

/**
 * Writer threads taking batches in the order they are given. A failed batch rejects its
 * own promise; `stop` ends the threads (batches still queued are rejected).
 */
export class WriterPool {
  /** Bytes received per layer, added to by the threads. */
  readonly downloaded: BigInt64Array;
  readonly #idle: Worker[] = [];
  readonly #queue: Array<{ batch: WriteBatch; resolve(): void; reject(e: Error): void }> = [];
  readonly #threads: Worker[] = [];
  #stopped = false;

  constructor(threads: number, layers: number) {
    this.downloaded = new BigInt64Array(new SharedArrayBuffer(8 * Math.max(1, layers)));
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(new URL(import.meta.url), { workerData: { role: 'pullthrough-write', downloaded: this.downloaded } });
      this.#threads.push(worker);
      this.#idle.push(worker);
    }
  }

  write(batch: WriteBatch): Promise<void> {
    if (this.#stopped) return Promise.reject(new WriteError('the writers were stopped'));
    // Not Promise.withResolvers: the CLI runs on Node 20, which lacks it.
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ batch, resolve, reject });
      this.#run();
    });
  }

  #run(): void {
    while (this.#idle.length > 0 && this.#queue.length > 0) {
      const worker = this.#idle.pop()!;
      const job = this.#queue.shift()!;
      const settle = (reply: WriteReply | Error) => {
        worker.off('message', settle).off('error', settle).off('exit', exited);
        if (reply instanceof Error) {
          // A thread that crashed takes no more batches, and without threads nothing will run.
          job.reject(reply);
          this.#threads.splice(this.#threads.indexOf(worker), 1);
          if (this.#threads.length === 0) for (const queued of this.#queue.splice(0)) queued.reject(reply);
          return;
        }
        if ('error' in reply) job.reject(new WriteError(reply.error));
        else job.resolve();
        this.#idle.push(worker);
        this.#run();
      };
      const exited = () => settle(new WriteError('a writer thread stopped'));
      worker.on('message', settle).on('error', settle).on('exit', exited);
      worker.postMessage(job.batch);
    }
  }

  /** Fresh layer tar URLs (presigned ones expire), by layer: for batches not started yet. */
  setUrls(urls: string[]): void {
    for (const thread of this.#threads) thread.postMessage({ urls } satisfies ToWriter);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const job of this.#queue.splice(0)) job.reject(new WriteError('the writers were stopped'));
    await Promise.all(this.#threads.map((t) => t.terminate()));
  }
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'pullthrough-write') {
  const { downloaded } = workerData as { downloaded: BigInt64Array };
  let urls: string[] = [];
  parentPort!.on('message', (message: ToWriter) => {
    if ('urls' in message) return void (urls = message.urls);
    const batch = { ...message, url: urls[message.layer] ?? message.url };
    writeBatch(batch, (bytes) => Atomics.add(downloaded, batch.layer, BigInt(bytes))).then(
      () => parentPort!.postMessage({ done: true } satisfies WriteReply),
      (e: unknown) => parentPort!.postMessage({ error: (e as Error).message } satisfies WriteReply),
    );
  });
}
