import { createHash, type Hash } from 'node:crypto';
import type { Blob, Catalog } from '../ports/catalog.ts';
import type { BlobStore, ByteRange, Staging } from '../ports/blob-store.ts';
import { sleep, type Clock } from '../ports/clock.ts';
import type { Spool, SpoolWriter } from '../ports/spool.ts';
import type { Upstreams } from '../ports/upstream.ts';
import { DigestMismatchError, OciError, SizeMismatchError, TransientError } from '../oci/errors.ts';
import { parseDigest } from '../oci/reference.ts';
import { streamOf } from '../streams.ts';
import { failureOf } from './retry.ts';
import { openUpstreamBlob, storeUnderLease, type UpstreamBody } from './blob-fetch.ts';

/** Bytes a client reads from the spool at a time: what one attached client costs in memory. */
const READ_CHUNK_BYTES = 256 * 1024;

/** Lease owners of client-started transfers start with this: no job stands behind them (see ingest.ts). */
export const TRANSFER_OWNER_PREFIX = 'transfer:';

export interface TransferDeps {
  catalog: Catalog;
  store: BlobStore;
  upstreams: Upstreams;
  /** Local scratch space for the bytes in flight (Node); without one, readers here read the store's staging. */
  spool?: Spool | undefined;
  leaseMs: number;
  clock: Clock;
  log: (entry: Record<string, unknown>) => void;
  /** An upstream body that sends nothing for this long is treated as cut (default 30 s). */
  stallMs?: number | undefined;
  /** Resumes of one transfer after cuts before it fails (retryably; default 5). */
  resumes?: number | undefined;
  /** How often a reader of a transfer running elsewhere looks for more bytes (default 200 ms). */
  pollMs?: number | undefined;
}

/** A client's view of the one transfer of a blob: the blob's size when known, and its bytes. */
export interface AttachedBlob {
  size: number | undefined;
  /** The bytes `body` holds, when a range was asked for. */
  range?: ByteRange | undefined;
  body: ReadableStream<Uint8Array>;
  /** Resolves when the transfer feeding the body has ended (a Worker keeps itself alive until then). */
  done: Promise<void>;
}

/** Retryable, but not from what is staged: the staging is removed before the failure is recorded. */
class UnusableStagingError extends TransientError {}

/** Whether fetching the rest again can help: a cut, a stall, a 5xx; not a wrong body or a refusal. */
const resumable = (e: unknown): boolean => {
  if (e instanceof DigestMismatchError || e instanceof SizeMismatchError) return false;
  if (e instanceof OciError) return e.retryable;
  return true;
};

/**
 * The one upstream transfer of each cold blob, across processes and isolates.
 *
 * The first GET (or the ingest job, when no client asks) claims the blob row's lease and
 * streams the upstream body into the store's staging area (core/ports/blob-store.ts
 * `Staging`: a file that grows in place on the filesystem store, chunk objects in an S3
 * bucket), hashing it as it comes. Every client meanwhile is fed from byte 0 at the
 * upstream's pace: in this process from the staging file or the spool, elsewhere (another
 * Node process sharing the database and store, another Worker isolate) from the staging
 * as it lands. A client's last byte goes out only once the whole body's digest and size
 * are verified; on a mismatch every attached body errors and nothing is published. A
 * client that goes away does not stop the transfer.
 *
 * A cut, stalled or failing upstream body is resumed with `Range: bytes=<received>-`; an
 * upstream that answers from 0 (Range ignored, or the object changed: another ETag) has
 * the bytes we already hold compared by hash and skipped. After a crash or a lost lease
 * the next owner re-hashes what is staged and resumes after it.
 */
export class Transfers {
  readonly #deps: TransferDeps;
  readonly #running = new Map<string, Promise<Transfer | undefined>>();
  readonly #live = new Set<Transfer>();

  constructor(deps: TransferDeps) {
    this.#deps = deps;
  }

  /**
   * The blob (or `range` of it) from its running transfer, here or elsewhere; a whole-blob
   * request with none running starts one. Undefined when the caller should pass the
   * upstream through: a range ahead of what has arrived, no transfer to follow, or a size
   * nobody knows for a transfer elsewhere. Throws what the upstream answered (BLOB_UNKNOWN,
   * DENIED, UNAVAILABLE, …) when starting fails.
   */
  async attach(row: Blob, range?: ByteRange): Promise<AttachedBlob | undefined> {
    const digest = row.digest;
    const attached = (await this.#startedHere(digest, !range))?.attach(range);
    return attached ?? this.#followElsewhere(row, range);
  }

  /**
   * The transfer of `digest` running here (or, with `start`, one started now if the lease
   * is free), once the upstream has answered it; undefined when there is none or it failed
   * to start (a job's transfer may still be waiting for the upstream's answer). Throws what
   * the upstream answered when starting one here fails.
   */
  async #startedHere(digest: string, start: boolean): Promise<Transfer | undefined> {
    const transfer = await (this.#running.get(digest) ?? (start ? this.#track(digest, this.#start(digest)) : undefined));
    const started = await transfer?.started.then(
      () => true,
      () => false,
    );
    return started ? transfer : undefined;
  }

  /**
   * Runs the transfer of a blob row the caller claimed under `owner` (the ingest job, when
   * no client started one), so that clients asking meanwhile join it. Resolves with the
   * stored size; rejects with the failure, already recorded on the row. `signal` (the
   * job's lease) stops it too.
   */
  async run(row: Blob, owner: string, signal?: AbortSignal): Promise<number> {
    const transfer = new Transfer(this.#deps, row, owner, signal);
    await this.#track(row.digest, Promise.resolve(transfer));
    return transfer.result;
  }

  /** Registers a transfer (or its start) as the one of `digest` until it ends. */
  #track(digest: string, pending: Promise<Transfer | undefined>): Promise<Transfer | undefined> {
    this.#running.set(digest, pending);
    const forget = () => {
      if (this.#running.get(digest) === pending) this.#running.delete(digest);
    };
    pending.then((t) => {
      if (!t) return forget();
      this.#live.add(t);
      void t.ended.then(() => (this.#live.delete(t), forget()));
    }, forget);
    return pending;
  }

  /** Bytes staged so far by this process's transfer of each digest asked about that has one (warm-up progress). */
  progress(digests: Iterable<string>): Map<string, number> {
    const wanted = new Set(digests);
    const found = new Map<string, number>();
    for (const t of this.#live) if (wanted.has(t.digest)) found.set(t.digest, t.written);
    return found;
  }

  /** Transfers running in this process and the clients reading them now (the metrics' gauges). */
  stats(): { inFlight: number; clients: number } {
    let clients = 0;
    for (const t of this.#live) clients += t.readers;
    return { inFlight: this.#live.size, clients };
  }

  async #start(digest: string): Promise<Transfer | undefined> {
    const { catalog, clock, leaseMs } = this.#deps;
    const owner = `${TRANSFER_OWNER_PREFIX}${crypto.randomUUID()}`;
    const claim = await catalog.claim('blob', digest, owner, leaseMs, clock());
    if (!claim.claimed) return undefined;
    const transfer = new Transfer(this.#deps, claim.claimed, owner);
    await transfer.started;
    return transfer;
  }

  /**
   * The blob from a transfer another process or isolate runs (its row leased, not yet
   * ready), read from the store's staging as it lands; the last byte once the row is
   * ready. Undefined when there is none to follow or the range starts past what is staged.
   */
  async #followElsewhere(row: Blob, range?: ByteRange): Promise<AttachedBlob | undefined> {
    const { catalog, store, clock } = this.#deps;
    const size = row.size;
    if (size === null) return undefined;
    const current = await catalog.blob(row.digest);
    if (current?.state !== 'fetching' || !current.leaseOwner || (current.leaseExpiresAt ?? 0) <= clock()) return undefined;
    const staging = store.staging(row.storageKey);
    const start = range?.start ?? 0;
    if (range && (await staging.length()) < start) return undefined;
    const end = range ? range.end + 1 : size;
    return { size, range, body: streamOf(this.#readElsewhere(row, size, staging, start, end)), done: Promise.resolve() };
  }

  async *#readElsewhere(row: Blob, size: number, staging: Staging, start: number, end: number): AsyncGenerator<Uint8Array> {
    const { catalog, store, clock, leaseMs } = this.#deps;
    const pollMs = this.#deps.pollMs ?? 200;
    // The blob's last byte waits for the row to say ready (verified and published).
    const cap = Math.min(end, size - 1);
    let offset = start;
    let progressAt = clock();
    try {
      // A writer that keeps its bytes local until asked stages them for us from now on.
      await staging.follow();
      for (;;) {
        const staged = Math.min(await staging.length(), cap);
        const body = staged > offset ? await staging.read(offset, staged) : undefined;
        if (body) {
          for await (const piece of body) {
            offset += piece.byteLength;
            yield piece;
          }
          progressAt = clock();
          continue;
        }
        if (offset >= end) return;
        const now = await catalog.blob(row.digest);
        if (now?.state === 'ready') {
          const object = await store.get(row.storageKey, { start: offset, end: end - 1 });
          if (!object) throw new TransientError('the blob went away as its transfer ended');
          yield* object.body;
          return;
        }
        if (now?.state !== 'fetching') throw new TransientError(`the transfer of the blob failed${now?.error ? `: ${now.error}` : ''}`);
        if ((now.leaseExpiresAt ?? 0) <= clock()) {
          // Its owner died (or stopped renewing): take the transfer over here, resuming
          // from what is staged, and read the rest from it. The announcement goes first: a
          // reader in the process that writes needs no chunks in the bucket.
          await staging.close();
          const attached = (await this.#startedHere(row.digest, true))?.attach({ start: offset, end: end - 1 }, true);
          if (attached) {
            yield* attached.body;
            return;
          }
          await staging.follow();
        }
        if (clock() - progressAt > 2 * leaseMs) throw new TransientError(`the transfer of the blob stopped at byte ${offset}`);
        await sleep(pollMs);
      }
    } finally {
      await staging.close();
    }
  }
}

class Transfer {
  readonly #deps: TransferDeps;
  readonly #row: Blob;
  readonly #owner: string;
  readonly #spoolId: string;
  #staging: Staging | undefined;
  #spool: SpoolWriter | undefined;
  #size: number | undefined;
  /** Bytes received, hashed and staged, from 0 without a gap. */
  #written = 0;
  #state: 'running' | 'verified' | 'failed' = 'running';
  #error: unknown;
  #readers = 0;
  #wake: Array<() => void> = [];
  /** Clients reading this transfer now. */
  get readers(): number {
    return this.#readers;
  }
  get digest(): string {
    return this.#row.digest;
  }
  /** Bytes received, verified so far and staged. */
  get written(): number {
    return this.#written;
  }
  /** With a spool: the copy of the spool into the staging, its failure, and when to stop it. */
  #fed: Promise<void> | undefined;
  #feedError: unknown;
  #stopFeeding = false;
  /** The upstream body has all come (before the verdict on it). */
  #received = false;
  /** The blob is published under its key (the staging's reads fall back to it). */
  #committed = false;
  #cleaned = false;
  /** The run has ended (stored or failed): nothing of it reads the spool any more. */
  #settled = false;
  /** Resolves once the upstream answered (the size is known), rejects with its error. */
  readonly started: Promise<void>;
  /** Resolves when the transfer has ended, verified or failed. */
  readonly ended: Promise<void>;
  #markStarted!: () => void;
  #failStart!: (e: unknown) => void;

  /** The stored size, or the failure (recorded on the row). */
  readonly result: Promise<number>;

  constructor(deps: TransferDeps, row: Blob, owner: string, signal?: AbortSignal) {
    this.#deps = deps;
    this.#row = row;
    this.#owner = owner;
    this.#spoolId = `${row.digest.replace(':', '-')}-${crypto.randomUUID()}`;
    this.started = new Promise((resolve, reject) => ((this.#markStarted = resolve), (this.#failStart = reject)));
    this.started.catch(() => {});
    this.result = this.#run(signal);
    this.result.catch(() => {});
    this.ended = this.result.then(
      () => undefined,
      () => undefined,
    );
  }

  async #run(outer: AbortSignal | undefined): Promise<number> {
    const digest = this.#row.digest;
    try {
      const size = await storeUnderLease(this.#deps, digest, this.#owner, outer, (signal) => this.#fetch(signal));
      this.#deps.log({ msg: 'transfer', digest, outcome: 'stored', bytes: size });
      return size;
    } catch (e) {
      this.#state = 'failed';
      this.#error = e;
      this.#failStart(e);
      this.#deps.log({ level: 'warn', msg: 'transfer failed', digest, error: failureOf(e).error });
      throw e;
    } finally {
      this.#settled = true;
      this.#notify();
      await this.#cleanUp();
    }
  }

  /**
   * Fetches, verifies and publishes the blob under the lease. What is staged stays for the
   * next owner to resume from, unless it cannot help (a wrong body, a refusal, resumed
   * bytes that did not verify): that is removed here, once the feeder has stopped, while the lease is still ours, before the failure is recorded. A lost
   * lease leaves it to whoever holds the lease now.
   */
  async #fetch(signal: AbortSignal): Promise<number> {
    try {
      return await this.#transfer(signal);
    } catch (e) {
      this.#stopFeeding = true;
      this.#notify();
      await this.#fed?.catch(() => {});
      if (!signal.aborted && (!resumable(e) || e instanceof UnusableStagingError)) await this.#staging?.discard().catch(() => {});
      throw e;
    }
  }

  /**
   * Copies what the spool received into the staging, from `from` on, as it arrives and at
   * the store's pace; resolves once all of the body is staged. A store failure fails the
   * transfer (the upstream loop sees it).
   */
  async #feed(staging: Staging, from: number): Promise<void> {
    let offset = from;
    try {
      for (;;) {
        if (this.#stopFeeding) return;
        const until = this.#written;
        if (offset < until) {
          for await (const piece of this.#read(offset, Math.min(until, offset + 4 * READ_CHUNK_BYTES))) {
            await staging.append(piece);
            offset += piece.byteLength;
          }
          continue;
        }
        if (this.#received) return;
        await new Promise<void>((resolve) => this.#wake.push(resolve));
      }
    } catch (e) {
      this.#feedError = e;
      throw e;
    }
  }

  async #transfer(signal: AbortSignal): Promise<number> {
    const row = this.#row;
    const { store, spool, upstreams, log } = this.#deps;
    const algorithm = parseDigest(row.digest).algorithm;
    const hash = createHash(algorithm);
    // With a spool the store may upload the bytes once, from it, and stage them for
    // readers elsewhere only when one asks (core/ports/blob-store.ts StagingOptions).
    const staging = (this.#staging = store.staging(row.storageKey, spool ? { replay: (start, end) => this.#read(start, end) } : undefined));
    let offset = await staging.open();
    if (row.size !== null && offset > row.size) offset = (await staging.truncate(0), 0);
    let resumed = offset > 0;
    if (!staging.immediate && spool) {
      // A spool entry of this blob that a killed process of this host left: resumed from
      // when nothing is staged (its parts went straight into an upload nobody can read back).
      const orphan = await spool.adopt(`${row.digest.replace(':', '-')}-`, this.#spoolId).catch(() => undefined);
      if (orphan && offset === 0 && orphan.size > 0 && (row.size === null || orphan.size <= row.size)) {
        this.#spool = orphan.writer;
        for await (const piece of this.#read(0, orphan.size)) hash.update(piece);
        this.#written = orphan.size;
        resumed = true;
        log({ msg: 'transfer resumes', digest: row.digest, from: this.#written, after: 'restart', source: 'spool' });
      } else {
        await orphan?.writer.remove();
        this.#spool = await spool.create(this.#spoolId);
      }
    }
    if (offset > 0) {
      // Bytes an earlier owner staged (it crashed, or lost its lease): hashed again, and
      // spooled for the readers here, before the upstream is asked for the rest.
      const body = await staging.read(0, offset);
      if (!body) throw new TransientError('the staged bytes went away');
      for await (const piece of body) {
        hash.update(piece);
        await this.#spool?.write(piece);
      }
      this.#written = offset;
      log({ msg: 'transfer resumes', digest: row.digest, from: offset, after: 'restart', source: 'staging' });
    }
    if (this.#spool) {
      this.#fed = this.#feed(staging, offset);
      this.#fed.catch(() => {});
    }

    const resumes = this.#deps.resumes ?? 5;
    let cuts = 0;
    let validator: string | undefined;
    for (let answered = false; ; ) {
      try {
        // A changed object (another ETag) is asked for again from 0.
        let opened = await openUpstreamBlob(upstreams, row, signal, this.#written);
        if (opened.start > 0 && validator !== undefined && opened.etag !== undefined && opened.etag !== validator) {
          await opened.body.cancel().catch(() => {});
          opened = await openUpstreamBlob(upstreams, row, signal, 0);
        }
        validator ??= opened.etag;
        if (!answered) {
          answered = true;
          this.#size = opened.size;
          this.#markStarted();
        }
        await this.#receive(opened, hash, signal);
        break;
      } catch (e) {
        if (signal.aborted) throw signal.reason;
        // A refusal when nothing was received yet is the answer to pass on, not a cut.
        if ((!answered && this.#written === 0 && e instanceof OciError) || !resumable(e)) throw e;
        if (++cuts > resumes) {
          const of = this.#size !== undefined ? ` of ${this.#size}` : '';
          throw new TransientError(`the upstream broke off the blob ${cuts} times (last: ${failureOf(e).error}); ${this.#written}${of} bytes are staged for the next attempt`, { cause: e });
        }
        log({ level: 'warn', msg: 'transfer resumes', digest: row.digest, from: this.#written, error: failureOf(e).error });
        await sleep(Math.min(250 * 2 ** (cuts - 1), 4000), signal);
      }
    }

    this.#received = true;
    this.#notify();
    if (this.#size !== undefined && this.#written !== this.#size) throw new SizeMismatchError(this.#size, this.#written, row.digest);
    const actual = `${algorithm}:${hash.digest('hex')}`;
    if (actual !== row.digest && resumed) {
      // What a crashed owner left may be what is wrong (a torn write): once more from 0
      // before the upstream is blamed.
      throw new UnusableStagingError(`the blob resumed after a restart came out as ${actual}; the next attempt fetches it from 0`);
    }
    if (actual !== row.digest) throw new DigestMismatchError(row.digest, actual);
    // Verified: every reader here gets its last byte now; readers elsewhere once the row is ready.
    this.#state = 'verified';
    this.#notify();
    await this.#fed;
    await staging.commit('application/octet-stream');
    // Readers of the staging's chunks (a Worker) read the rest from the published object.
    this.#committed = true;
    this.#notify();
    return this.#written;
  }

  /**
   * Appends one upstream body to what was received. A body from before `#written` (the
   * upstream ignored the Range, or the object changed) must repeat the bytes we hold:
   * they are hashed and compared, not staged again. Throws on a cut, a stall or an overrun.
   */
  async #receive(opened: UpstreamBody, hash: Hash, signal: AbortSignal): Promise<void> {
    const row = this.#row;
    const algorithm = parseDigest(row.digest).algorithm;
    const staging = this.#staging!;
    let repeat = this.#written - opened.start;
    const held = repeat > 0 ? hash.copy().digest('hex') : undefined;
    const again = repeat > 0 ? createHash(algorithm) : undefined;
    for await (const chunk of withStall(opened.body, this.#deps.stallMs ?? 30_000)) {
      let piece = chunk;
      if (repeat > 0) {
        const take = Math.min(repeat, piece.byteLength);
        again!.update(piece.subarray(0, take));
        piece = piece.subarray(take);
        repeat -= take;
        if (repeat === 0 && again!.digest('hex') !== held) {
          throw new DigestMismatchError(row.digest, 'the upstream sent other bytes than before for the start of the blob');
        }
        if (piece.byteLength === 0) continue;
      }
      if (this.#size !== undefined && this.#written + piece.byteLength > this.#size) throw new SizeMismatchError(this.#size, this.#written + piece.byteLength, row.digest);
      hash.update(piece);
      if (this.#feedError !== undefined) throw this.#feedError;
      // With a spool the staging is fed from it at the store's own pace (#feed): a bucket
      // slower than the upstream never slows the clients here.
      if (this.#spool) await this.#spool.write(piece);
      else await staging.append(piece);
      this.#written += piece.byteLength;
      this.#notify();
      if (signal.aborted) throw signal.reason;
    }
    if (repeat > 0) throw new TransientError(`the upstream body ended before the ${this.#written} bytes already received`);
    if (this.#size !== undefined && this.#written < this.#size) throw new TransientError(`the upstream body ended at byte ${this.#written} of ${this.#size}`);
  }

  /** A client's reader of the blob (or `range`), or undefined when this transfer cannot serve it (now). */
  attach(range?: ByteRange, waitAhead = false): AttachedBlob | undefined {
    // Once verified, a newcomer reads the published blob (through the staging, which falls back to it).
    if (this.#state !== 'running') return undefined;
    const start = range?.start ?? 0;
    // A range past what has arrived is passed through rather than waited for (unless the
    // caller has read up to it and is waiting anyway).
    if (range && start > this.#readable() && !waitAhead) return undefined;
    const end = range ? range.end + 1 : (this.#size ?? Infinity);
    return { size: this.#size, range, body: streamOf(this.#follow(start, end)), done: this.ended };
  }

  /** Bytes readers here can read now: received ones from a local file or the spool, else what the staging says. */
  #readable(): number {
    const staging = this.#staging;
    if (!staging) return 0;
    return staging.immediate || this.#spool || this.#committed ? this.#written : staging.readable;
  }

  /** Bytes `[start, end)` of what arrived, from the spool or the staging. */
  async *#read(start: number, end: number): AsyncGenerator<Uint8Array> {
    if (this.#spool) {
      for (let at = start; at < end; at = Math.min(end, at + READ_CHUNK_BYTES)) {
        yield await this.#deps.spool!.read(this.#spoolId, at, Math.min(end, at + READ_CHUNK_BYTES));
      }
      return;
    }
    const body = await this.#staging!.read(start, end);
    if (!body) throw new TransientError('the staged bytes went away');
    yield* body;
  }

  /**
   * The bytes `[start, end)` as they arrive. The blob's last byte waits for the verdict on
   * the whole body; a failed transfer errors the reader.
   */
  async *#follow(start: number, end: number): AsyncGenerator<Uint8Array> {
    this.#readers++;
    let offset = start;
    try {
      for (;;) {
        if (this.#state === 'failed') throw this.#error;
        const verified = this.#state === 'verified';
        const readable = this.#readable();
        const total = this.#size ?? (verified ? this.#written : Infinity);
        const until = Math.min(end, total);
        // Never the blob's last byte before the verdict (with no size known: never the last received).
        const limit = verified ? Infinity : Math.min(total, readable) - 1;
        const available = Math.min(readable, until, limit);
        // Read in whole chunks while the body arrives (one read per upstream packet costs
        // every attached client a read each); the tail once it has all come.
        const tail = verified || available >= until || (this.#size !== undefined && available >= this.#size - 1);
        if (offset < available && (available - offset >= READ_CHUNK_BYTES || tail)) {
          for await (const piece of this.#read(offset, available)) {
            offset += piece.byteLength;
            yield piece;
          }
          continue;
        }
        if (offset >= until && (verified || until < total)) return;
        await new Promise<void>((resolve) => this.#wake.push(resolve));
      }
    } finally {
      this.#readers--;
      void this.#cleanUp();
    }
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }

  async #cleanUp(): Promise<void> {
    // Not before the run has settled: once the body is verified, the staging may still be
    // fed from the spool at the store's pace, and replay it (chunks for a follower elsewhere).
    if (!this.#settled || this.#readers > 0 || this.#cleaned) return;
    this.#cleaned = true;
    await this.#spool?.remove().catch(() => {});
    await this.#staging?.close().catch(() => {});
  }
}

/**
 * The body's pieces; a body that sends nothing for `stallMs` is cancelled and throws, as a
 * cut does, so the transfer resumes from what it has.
 */
async function* withStall(body: ReadableStream<Uint8Array>, stallMs: number): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  try {
    for (;;) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new TransientError(`the upstream sent nothing for ${stallMs / 1000} s`)), stallMs);
      });
      const next = await Promise.race([reader.read(), stalled]).finally(() => clearTimeout(timer));
      if (next.done) return;
      yield next.value;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}
