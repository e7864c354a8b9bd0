import { toWire, type JobMessage, type JobQueue, type WireJob } from '../ports/job-queue.ts';

/** The part of a Cloudflare Queue producer binding this adapter uses. */
export interface QueueProducer {
  sendBatch(messages: Iterable<{ body: WireJob; delaySeconds?: number }>): Promise<void>;
}

/** Cloudflare Queue messages, at most this many per sendBatch call (the platform's limit). */
const MAX_BATCH_MESSAGES = 100;

/**
 * Jobs on Cloudflare Queues. The queue does not deduplicate: a key sent twice is
 * delivered twice, and the job (idempotent by its row's lease and state) makes the second
 * a no-op.
 */
export class CloudflareJobQueue implements JobQueue {
  readonly #producer: QueueProducer;

  constructor(producer: QueueProducer) {
    this.#producer = producer;
  }

  async send(messages: readonly JobMessage[], delaySeconds?: number): Promise<void> {
    for (let i = 0; i < messages.length; i += MAX_BATCH_MESSAGES) {
      const batch = messages.slice(i, i + MAX_BATCH_MESSAGES).map((m) => ({ body: toWire(m), ...(delaySeconds ? { delaySeconds } : {}) }));
      await this.#producer.sendBatch(batch);
    }
  }
}
