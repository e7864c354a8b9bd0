/** Milliseconds since the epoch. Tests pass a clock they can move (tag TTLs, leases). */
export type Clock = () => number;

export const systemClock: Clock = () => Date.now();
