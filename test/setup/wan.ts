// A WAN stand-in for benches: a TCP proxy on 127.0.0.1 in front of a local server that
// adds a round-trip time and caps each connection's rate in each direction, and counts the
// bytes that came from the far side (what an upstream bills and rate-limits).
import { createServer, connect, type Socket } from 'node:net';

export interface Wan {
  /** `http://127.0.0.1:<port>`: the far server, as seen through the link. */
  url: string;
  host: string;
  /** Bytes sent by the far side to clients since the last reset. */
  bytesFromFar(): number;
  reset(): void;
  stop(): Promise<void>;
}

/** Bytes queued in one direction before the sender is paused. */
const HIGH_WATER_BYTES = 1024 * 1024;

/**
 * Forwards `from` to `to` as one direction of a link with latency `delayMs` and a rate of
 * `bytesPerSecond`: each chunk leaves when the link is free after the previous one and
 * arrives `delayMs` later. One queue and one timer keep the order (the end included).
 */
function slowPipe(from: Socket, to: Socket, delayMs: number, bytesPerSecond: number, count?: (n: number) => void): void {
  const queue: Array<{ at: number; chunk: Buffer | 'end' }> = [];
  let linkFreeAt = 0;
  let queued = 0;
  let timer: NodeJS.Timeout | undefined;
  const deliver = () => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.at <= now) {
      const { chunk } = queue.shift()!;
      if (chunk === 'end') {
        to.end();
        continue;
      }
      queued -= chunk.length;
      if (!to.destroyed) to.write(chunk);
    }
    if (queued <= HIGH_WATER_BYTES / 2 && from.isPaused()) from.resume();
    if (queue.length > 0) timer = setTimeout(deliver, queue[0]!.at - now);
  };
  const push = (chunk: Buffer | 'end', bytes: number) => {
    const now = performance.now();
    linkFreeAt = Math.max(now, linkFreeAt) + (bytes / bytesPerSecond) * 1000;
    queue.push({ at: linkFreeAt + delayMs, chunk });
    timer ??= setTimeout(deliver, linkFreeAt + delayMs - now);
  };
  from.on('data', (chunk: Buffer) => {
    count?.(chunk.length);
    queued += chunk.length;
    if (queued > HIGH_WATER_BYTES) from.pause();
    push(chunk, chunk.length);
  });
  from.on('end', () => push('end', 0));
  from.on('error', () => to.destroy());
}

export async function startWan(far: { host: string; port: number }, link: { rttMs: number; bytesPerSecond: number }): Promise<Wan> {
  let bytes = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(far.port, far.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    slowPipe(client, upstream, link.rttMs / 2, link.bytesPerSecond);
    slowPipe(upstream, client, link.rttMs / 2, link.bytesPerSecond, (n) => (bytes += n));
    // A client gone has nothing more to receive; the far side closing is passed on by
    // slowPipe after the bytes still crossing the link (its 'end'), not at once.
    client.on('close', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    bytesFromFar: () => bytes,
    reset: () => void (bytes = 0),
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
