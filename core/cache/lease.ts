/**
 * Keeps a row lease alive while a job streams: `renew` runs every third of the lease and
 * answers whether we still hold it. When it does not (we stalled past the lease and
 * another consumer took over), `signal` aborts, so the job's download stops and its
 * store write is abandoned. A failed renewal (database hiccup) is tried again next beat.
 */
export function holdLease(what: string, renew: () => Promise<boolean>, leaseMs: number): { signal: AbortSignal; stop(): void } {
  const lost = new AbortController();
  const beat = setInterval(() => {
    renew()
      .then((held) => held || lost.abort(new Error(`lost the ${what} lease to another consumer`)))
      .catch(() => {});
  }, Math.max(500, Math.floor(leaseMs / 3)));
  return { signal: lost.signal, stop: () => clearInterval(beat) };
}
