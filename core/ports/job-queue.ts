/**
 * Background work, as typed messages. Both queues (the libSQL one on Node, Cloudflare
 * Queues on Workers) carry them as `{ key, kind, payload }` (`toWire`); consumers read
 * them back with `fromWire`, which refuses anything malformed.
 */
export type JobMessage =
  /** Copy a blob from its upstream into the store. */
  | { kind: 'ingest'; digest: string }
  /** Extract a stored layer blob into layer.tar + toc.json. */
  | { kind: 'extract'; diffId: string }
  /** Plan an image's layers (records them, sends their extract jobs): EXTRACT=eager. */
  | { kind: 'prepare-layers'; upstream: string; name: string; manifest: string }
  /** Resolve a warm-up's images and schedule their blobs (and layers): core/cache/warm.ts. */
  | { kind: 'warm'; id: string };

export type JobKind = JobMessage['kind'];

/** The message as a queue stores it: `key` makes it idempotent (one live job per key). */
export interface WireJob {
  key: string;
  kind: string;
  payload: unknown;
}

/** One live job per key: the same work asked for twice is one job. */
export function jobKey(m: JobMessage): string {
  switch (m.kind) {
    case 'ingest':
      return `ingest:${m.digest}`;
    case 'extract':
      return `extract:${m.diffId}`;
    case 'prepare-layers':
      return `prepare:${m.manifest}`;
    case 'warm':
      return `warm:${m.id}`;
  }
}

export function toWire(m: JobMessage): WireJob {
  const { kind, ...payload } = m;
  return { key: jobKey(m), kind, payload };
}

const text = (payload: unknown, field: string): string | undefined => {
  const value = (payload as Record<string, unknown> | null | undefined)?.[field];
  return typeof value === 'string' && value !== '' ? value : undefined;
};

/** The typed message of a stored job, or undefined for an unknown kind or a bad payload. */
export function fromWire(kind: unknown, payload: unknown): JobMessage | undefined {
  if (kind === 'ingest') {
    const digest = text(payload, 'digest');
    return digest ? { kind, digest } : undefined;
  }
  if (kind === 'extract') {
    const diffId = text(payload, 'diffId');
    return diffId ? { kind, diffId } : undefined;
  }
  if (kind === 'prepare-layers') {
    const [upstream, name, manifest] = [text(payload, 'upstream'), text(payload, 'name'), text(payload, 'manifest')];
    return upstream && name && manifest ? { kind, upstream, name, manifest } : undefined;
  }
  if (kind === 'warm') {
    const id = text(payload, 'id');
    return id ? { kind, id } : undefined;
  }
  return undefined;
}

/** Where work is sent. Sending a message whose key has a live job may be a no-op. */
export interface JobQueue {
  send(messages: readonly JobMessage[]): Promise<void>;
}

/**
 * How a queue carries out what the retry policy decided for one delivered job
 * (core/cache/retry.ts `nextStep`): each adapter has one.
 */
export interface JobAcker {
  /** Finished: never delivered again. */
  done(): Promise<void> | void;
  /** Failed, retryable: delivered again after `delayMs`, as the next attempt. */
  retry(delayMs: number, error: string): Promise<void> | void;
  /** Waiting on other work: delivered again after `delayMs`, the attempt not counted. */
  defer(delayMs: number): Promise<void> | void;
  /** Failed for good: never delivered again (recorded where the queue can). */
  dead(error: string): Promise<void> | void;
}
