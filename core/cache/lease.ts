/**
 * The one lease helper: every leased thing (a blob row, a layer row, a job) is worked on
 * inside `whileLeased`, on both runtimes. The lease is renewed every third of its length;
 * when a renewal says another owner has it, or renewals keep failing until the lease has
 * run out (the database is unreachable: another consumer may take over), the work's
 * signal aborts with LeaseLostError, so its download and store write stop. A caller's own
 * signal (a job's lease around a blob's) aborts the work too.
 */
export class LeaseLostError extends Error {
  /** A retry finds the new owner's work done or running, and stops there: harmless, and it covers an owner that dies too. */
  readonly retryable = true;

  constructor(what: string, why: string) {
    super(`lost the ${what} lease: ${why}`);
    this.name = 'LeaseLostError';
  }
}

export interface LeaseOptions {
  /** For messages: `blob`, `layer`, `job`. */
  what: string;
  leaseMs: number;
  /** Extends the lease by `leaseMs`; false when we no longer hold it. */
  renew: () => Promise<boolean>;
  /** Aborts the work as well (an outer lease, a stopping server). */
  signal?: AbortSignal | undefined;
}

export async function whileLeased<T>(options: LeaseOptions, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const lost = new AbortController();
  const signal = options.signal ? AbortSignal.any([lost.signal, options.signal]) : lost.signal;
  let heldAt = performance.now();
  let renewing = false;
  const beat = setInterval(() => {
    if (renewing || lost.signal.aborted) return;
    renewing = true;
    options
      .renew()
      .then(
        (held) => {
          if (held) heldAt = performance.now();
          else lost.abort(new LeaseLostError(options.what, 'another owner has it'));
        },
        () => {
          // A failed renewal is tried again next beat, until the lease would have run out.
          if (performance.now() - heldAt >= options.leaseMs) lost.abort(new LeaseLostError(options.what, 'it could not be renewed before it ran out'));
        },
      )
      .finally(() => (renewing = false));
  }, Math.max(200, Math.floor(options.leaseMs / 3)));
  try {
    return await work(signal);
  } finally {
    clearInterval(beat);
  }
}
