/** Milliseconds since the epoch. Tests pass a clock they can move (tag TTLs, leases). */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();

/** Waits `ms` of real time (whatever a test clock says); rejects with the signal's reason when it aborts. */
export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });

/**
 * Lets pending I/O and timers run before going on (a loop of synchronous libSQL calls
 * never does otherwise): `setImmediate` where the runtime has it, else a zero timeout.
 */
export const yieldToEventLoop = (): Promise<void> =>
  new Promise<void>((resolve) => (typeof setImmediate === 'function' ? setImmediate(resolve) : setTimeout(resolve, 0)));
