import { fromWire, toWire, type JobAcker, type JobMessage, type JobQueue, type WireJob } from '../ports/job-queue.ts';

/** The part of a Cloudflare Queue producer binding this adapter uses. */
export interface QueueProducer {
  sendBatch(messages: Iterable<{ body: WireJob; delaySeconds?: number }>): Promise<void>;
}

/** The part of a delivered Cloudflare Queue message this adapter uses. */
export interface QueueMessage<Body> {
  readonly id: string;
  readonly body: Body;
  /** 1 for the first delivery. */
  readonly attempts: number;
  ack(): void;
  retry(options?: { delaySeconds?: number }): void;
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

/**
 * The acks of one delivered message. A retry is the queue's own (the attempt counts
 * towards max_retries); a deferral is a fresh copy sent with the delay and the original
 * acked, so waiting does not use up attempts; done and dead ack (a dead job's failure is
 * on its row; the dead-letter queue is for a consumer that crashes).
 */
export function ackerFor(message: QueueMessage<WireJob>, queue: CloudflareJobQueue): JobAcker {
  return {
    done: () => message.ack(),
    retry: (delayMs) => message.retry({ delaySeconds: Math.max(1, Math.ceil(delayMs / 1000)) }),
    defer: async (delayMs) => {
      const again = fromWire(message.body?.kind, message.body?.payload);
      if (again) await queue.send([again], Math.max(1, Math.ceil(delayMs / 1000)));
      message.ack();
    },
    dead: () => message.ack(),
  };
}
