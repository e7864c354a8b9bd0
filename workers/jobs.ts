// The job dispatch of both runtimes: one table from a message's kind to its handler, and
// one function that runs a delivered message, logs it and tells the queue what to do
// (core/cache/retry.ts decides). The Node consumer and the Cloudflare `queue` handler
// call `handleJob`; they differ only in how they ack.
import { fromWire, type JobAcker, type JobKind, type JobMessage } from '../core/ports/job-queue.ts';
import { failureOf, nextStep, type JobResult, type Next } from '../core/cache/retry.ts';
import { ingestBlob } from '../core/cache/ingest.ts';
import { extractLayer } from '../core/cache/extract.ts';
import { rootfsPlan } from '../core/sandbox/plan.ts';
import { resolveWarm } from '../core/cache/warm.ts';
import type { Deps } from './deps.ts';

type Handler<K extends JobKind> = (deps: Deps, message: Extract<JobMessage, { kind: K }>, owner: string, signal: AbortSignal | undefined) => Promise<JobResult>;

const HANDLERS: { [K in JobKind]: Handler<K> } = {
  ingest: (deps, m, owner, signal) => ingestBlob(deps.ingest, m.digest, owner, signal),
  extract: (deps, m, owner, signal) => extractLayer(deps.ingest, m.diffId, owner, signal),
  'prepare-layers': async (deps, m) => {
    await rootfsPlan({ ...deps.plan, extractOff: false }, { upstream: m.upstream, name: m.name }, m.manifest);
    return { ok: true, outcome: 'scheduled' };
  },
  warm: (deps, m) => resolveWarm(deps.warm, m.id),
};

/** What a log line says a job was about. */
function subjectOf(m: JobMessage): Record<string, string> {
  switch (m.kind) {
    case 'ingest':
      return { digest: m.digest };
    case 'extract':
      return { diff_id: m.diffId };
    case 'prepare-layers':
      return { manifest: m.manifest };
    case 'warm':
      return { warm: m.id };
  }
}

export interface Delivery {
  kind: unknown;
  payload: unknown;
  /** 1 for the first delivery. */
  attempt: number;
  /** Who holds the job: written on the rows it leases. */
  owner: string;
  /** The job's own lease, where the queue has one: losing it stops the work. */
  signal?: AbortSignal | undefined;
}

/**
 * Runs one delivered job and acks it: done, retried with backoff while attempts remain
 * and the failure is retryable, deferred (not counted) when it waits on other work, dead
 * otherwise. A malformed message is dead at once. Logs one line per run:
 * `{"msg":kind,…,outcome,attempt,ms,bytes}` on success, a warning or an error otherwise.
 */
export async function handleJob(deps: Deps, delivery: Delivery, maxAttempts: number, ack: JobAcker): Promise<Next> {
  const message = fromWire(delivery.kind, delivery.payload);
  if (!message) {
    const error = `unknown job ${JSON.stringify(delivery.kind)} or bad payload`;
    deps.log({ level: 'error', msg: 'job refused', kind: String(delivery.kind), error });
    await ack.dead(error);
    return { ack: 'dead', error };
  }
  const started = performance.now();
  let result: JobResult;
  try {
    const handler = HANDLERS[message.kind] as Handler<JobKind>;
    result = await handler(deps, message, delivery.owner, delivery.signal);
  } catch (e) {
    result = failureOf(delivery.signal?.aborted ? delivery.signal.reason : e);
  }
  const ms = Math.round(performance.now() - started);
  const subject = subjectOf(message);
  const next = nextStep(result, delivery.attempt, maxAttempts);
  deps.metrics.observe('pullthrough_job_duration_seconds', ms / 1000, { kind: message.kind, ack: next.ack });
  if (result.ok) {
    deps.log({ msg: message.kind, ...subject, outcome: result.outcome, attempt: delivery.attempt, ms, ...(result.outcome === 'stored' ? { bytes: result.bytes } : {}) });
  }
  switch (next.ack) {
    case 'done':
      await ack.done();
      break;
    case 'defer':
      await ack.defer(next.delayMs);
      break;
    case 'retry': {
      const error = (result as { error: string }).error;
      deps.log({ level: 'warn', msg: `${message.kind} failed`, ...subject, error, attempt: delivery.attempt, retryInMs: next.delayMs });
      await ack.retry(next.delayMs, error);
      break;
    }
    case 'dead':
      deps.log({ level: 'error', msg: `${message.kind} failed for good`, ...subject, error: next.error, attempt: delivery.attempt });
      await ack.dead(next.error);
      break;
  }
  return next;
}
