import { isOciError, redactUrls } from '../oci/errors.ts';

/**
 * The one retry policy of background work. A job returns a JobResult; `nextStep` tells
 * the queue what to do with it, and both runtimes' consumers do exactly that (they differ
 * only in how they ack). Whether a failure is worth retrying is said by the error where
 * it was thrown (`retryable`); an error that says nothing (a network failure, a store
 * write that broke) is retried, within the attempts.
 */
export type JobResult =
  | { ok: true; outcome: 'already-ready' | 'leased-elsewhere' | 'scheduled' | 'resolved' | 'gone' }
  | { ok: true; outcome: 'stored'; bytes: number }
  /** Not ready to run (waiting for another consumer's work): run again later, not counted as an attempt. */
  | { ok: true; outcome: 'deferred'; waitMs: number; reason: string }
  | { ok: false; retry: boolean; error: string };

export type JobFailure = Extract<JobResult, { ok: false }>;

/** What the queue does with a finished run. */
export type Next =
  | { ack: 'done' }
  | { ack: 'retry'; delayMs: number }
  | { ack: 'defer'; delayMs: number }
  | { ack: 'dead'; error: string };

/** How long a deferred job waits before looking again at work another owner is doing (a blob being fetched). */
export const DEFER_MS = 2000;

/** Delay before attempt `attempts + 1`: 1 s, 2 s, 4 s, … capped at 5 minutes. */
export const backoffMs = (attempts: number): number => Math.min(1000 * 2 ** Math.max(0, attempts - 1), 300_000);

/** A thrown error as a failed result: its message (URLs removed) and whether to retry. */
export function failureOf(e: unknown): JobFailure {
  const said = (e as { retryable?: unknown } | null)?.retryable;
  const retry = typeof said === 'boolean' ? said : true;
  if (isOciError(e)) {
    const detail = e.detail ? ` ${JSON.stringify(e.detail)}` : '';
    return { ok: false, retry, error: redactUrls(`${e.code}: ${e.message}${detail}`) };
  }
  return { ok: false, retry, error: redactUrls(e instanceof Error ? e.message : String(e)) };
}

/** The result of attempt `attempt` (1 for the first) as the queue's next step. */
export function nextStep(result: JobResult, attempt: number, maxAttempts: number): Next {
  if (result.ok) return result.outcome === 'deferred' ? { ack: 'defer', delayMs: result.waitMs } : { ack: 'done' };
  if (result.retry && attempt < maxAttempts) return { ack: 'retry', delayMs: backoffMs(attempt) };
  return { ack: 'dead', error: result.error };
}
