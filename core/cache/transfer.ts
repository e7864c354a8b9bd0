import type { Blob, Catalog } from '../ports/catalog.ts';
import type { BlobStore } from '../ports/blob-store.ts';
import type { Clock } from '../ports/clock.ts';
import type { Spool, SpoolWriter } from '../ports/spool.ts';
import type { Upstreams } from '../ports/upstream.ts';
import { failureOf } from './retry.ts';
import { openUpstreamBlob, storeUnderLease } from './blob-fetch.ts';

/** Bytes a client reads from the spool at a time: what one attached client costs in memory. */
const READ_CHUNK_BYTES = 256 * 1024;

/** Lease owners of client-started transfers start with this: no job stands behind them (see ingest.ts). */
export const TRANSFER_OWNER_PREFIX = 'transfer:';

export interface TransferDeps {
  catalog: Catalog;
  store: BlobStore;
  upstreams: Upstreams;
  spool: Spool;
  leaseMs: number;
  clock: Clock;
  log: (entry: Record<string, unknown>) => void;
}

/** A client's view of the one transfer of a blob: its size when known, and its bytes from 0. */
export interface AttachedBlob {
  size: number | undefined;
  body: ReadableStream<Uint8Array>;
}

/**
 * The one upstream transfer of each cold blob this process is fetching: the first GET
 * starts it (under the blob row's lease, so no other consumer fetches it meanwhile), and
 * every GET while it runs is fed from it, from byte 0, at the upstream's pace. The body is
 * written once to a spool (disk, not memory) and once to the store, which verifies digest
 * and size; clients read the spool, and the last byte goes out only once the store has
 * verified the whole body. On a mismatch or a cut upstream every attached client's body
 * errors (never a complete response) and nothing is published. A client that goes away
 * does not stop the transfer. Per process: another process, or a Worker, still passes
 * bytes through from the upstream while it runs (issue 12 carries on from here).
 */
export class Transfers {
  readonly #deps: TransferDeps;
  readonly #running = new Map<string, Promise<Transfer | undefined>>();

  constructor(deps: TransferDeps) {
    this.#deps = deps;
  }

  /**
   * The blob from the transfer running here, or from one started now; undefined when
   * another owner holds the blob's lease (the caller passes the upstream through). Throws
   * what the upstream answered (BLOB_UNKNOWN, DENIED, UNAVAILABLE, …) when starting fails.
   */
  async attach(digest: string): Promise<AttachedBlob | undefined> {
    const transfer = await (this.#running.get(digest) ?? this.#track(digest, this.#start(digest)));
    if (!transfer) return undefined;
    // A job's transfer may still be waiting for the upstream's answer; one that failed to
    // start leaves the caller to pass the upstream's answer through.
    const started = await transfer.started.then(
      () => true,
      () => false,
    );
    return started ? transfer.attach() : undefined;
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
    pending.then((t) => (t ? t.ended.then(forget) : forget()), forget);
    return pending;
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
}

class Transfer {
  readonly #deps: TransferDeps;
  readonly #row: Blob;
  readonly #owner: string;
  readonly #spoolId: string;
  #spool: SpoolWriter | undefined;
  #size: number | undefined;
  #written = 0;
  #upstreamDone = false;
  #upstreamError: unknown;
  #state: 'running' | 'verified' | 'failed' = 'running';
  #error: unknown;
  #readers = 0;
  #wake: Array<() => void> = [];
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
      this.#state = 'verified';
      this.#deps.log({ msg: 'transfer', digest, outcome: 'stored', bytes: size });
      return size;
    } catch (e) {
      this.#state = 'failed';
      this.#error = e;
      this.#failStart(e);
      this.#deps.log({ level: 'warn', msg: 'transfer failed', digest, error: failureOf(e).error });
      throw e;
    } finally {
      this.#notify();
      await this.#cleanUp();
    }
  }

  async #fetch(signal: AbortSignal): Promise<number> {
    const row = this.#row;
    const { body, size } = await openUpstreamBlob(this.#deps.upstreams, row, signal);
    this.#size = size;
    this.#spool = await this.#deps.spool.create(this.#spoolId);
    this.#markStarted();

    // The upstream body goes to the spool only, at the upstream's pace; the store's
    // verifying write reads the spool like a client (its own pace: a slow bucket never
    // slows the clients), and its verdict releases everyone's last byte.
    const put = this.#deps.store.put(row.storageKey, this.#follow(true), { expected: { digest: row.digest, size: this.#size }, contentType: 'application/octet-stream' });
    put.catch(() => {});
    try {
      for await (const chunk of body) {
        await this.#spool.write(chunk);
        this.#written += chunk.byteLength;
        this.#notify();
      }
      this.#upstreamDone = true;
      this.#notify();
    } catch (e) {
      this.#upstreamError = signal.aborted ? signal.reason : e;
      this.#notify();
      await put.catch(() => {});
      throw this.#upstreamError;
    }
    return (await put).size;
  }

  /** A client's reader from byte 0, or undefined once the transfer is over (the store has the blob). */
  attach(): AttachedBlob | undefined {
    if (!this.#spool) return undefined;
    return { size: this.#size, body: this.#follow(false) };
  }

  /**
   * The spooled bytes from 0, following the transfer. A client (`store` false) gets the
   * last byte only once the store has verified the whole body, and an error when the
   * transfer fails; the store's own write (`store` true) gets every byte as it lands, and
   * the upstream's error if the body breaks.
   */
  #follow(store: boolean): ReadableStream<Uint8Array> {
    this.#readers++;
    let offset = 0;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#readers--;
      if (this.#state !== 'running') void this.#cleanUp();
    };
    return new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          const failed = store ? this.#upstreamError : this.#state === 'failed' ? this.#error : undefined;
          if (failed !== undefined) {
            release();
            controller.error(failed);
            return;
          }
          const complete = store ? this.#upstreamDone : this.#state === 'verified';
          // A client's last byte waits for the store's verdict on the whole body.
          const available = complete || store ? this.#written : Math.max(0, Math.min(this.#written, this.#size ?? Infinity) - 1);
          // Read in whole chunks while the body arrives (one read per upstream packet
          // costs every attached client a syscall each); the tail once it has all come.
          const settled = this.#upstreamDone || this.#state !== 'running';
          if (offset < available && (available - offset >= READ_CHUNK_BYTES || settled)) {
            const end = Math.min(available, offset + READ_CHUNK_BYTES);
            const bytes = await this.#deps.spool.read(this.#spoolId, offset, end);
            offset = end;
            controller.enqueue(bytes);
            return;
          }
          if (complete) {
            release();
            controller.close();
            return;
          }
          await new Promise<void>((resolve) => this.#wake.push(resolve));
        }
      },
      // A client that goes away leaves the transfer running for the others and the store.
      cancel: () => release(),
    });
  }

  #notify(): void {
    for (const wake of this.#wake.splice(0)) wake();
  }

  async #cleanUp(): Promise<void> {
    if (this.#state === 'running' || this.#readers > 0 || !this.#spool) return;
    const spool = this.#spool;
    this.#spool = undefined;
    await spool.remove().catch(() => {});
  }
}
