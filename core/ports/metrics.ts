/**
 * Counters and histograms, named in Prometheus style (`pullthrough_requests_total`).
 * Core code reports what happened; an adapter decides where it goes. The noop is what
 * a runtime without a metrics sink, and every test of another part, uses.
 */
export type Labels = Readonly<Record<string, string>>;

export interface Metrics {
  /** Adds `by` (default 1) to a counter. */
  count(name: string, labels?: Labels, by?: number): void;
  /** Records one observation (a duration in seconds, a size in bytes). */
  observe(name: string, value: number, labels?: Labels): void;
}

export const noopMetrics: Metrics = {
  count() {},
  observe() {},
};
