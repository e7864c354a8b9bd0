import type { Leftover } from './blob-store.ts';

/**
 * Local scratch space for a blob in flight: what the one transfer has received so far, so
 * that every client attached to it reads from byte 0 at the upstream's pace without the
 * bytes being held in memory. Node has one (a directory); a Worker has none.
 */
export interface SpoolWriter {
  /** Appends bytes; resolves once they can be read back. */
  write(chunk: Uint8Array): Promise<void>;
  /** Removes the spooled bytes (readers that already have them open finish). */
  remove(): Promise<void>;
}

export interface Spool {
  /** A new, empty spool entry. */
  create(id: string): Promise<SpoolWriter>;
  /** Bytes `[start, end)` of entry `id`, which must have been written. */
  read(id: string, start: number, end: number): Promise<Uint8Array>;
  /**
   * Takes over, as entry `id`, the largest entry whose id starts with `prefix` that a
   * process that is gone left behind (killed mid-transfer, on this host): its length and a
   * writer appending after it; undefined when there is none. Other such entries of the
   * prefix are removed.
   */
  adopt(prefix: string, id: string): Promise<{ writer: SpoolWriter; size: number } | undefined>;
  /** Entries of processes that are gone, last written before `before` (epoch ms): listed, and removed unless `dryRun`. */
  leftovers(before: number, dryRun: boolean): Promise<Leftover[]>;
}
