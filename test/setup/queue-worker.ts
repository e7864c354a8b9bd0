// A Worker for the JobQueue suite (test/integration/job-queue.conformance.test.ts): the
// consumer of a Cloudflare Queue under Miniflare that asks the test, at CONTROL, what to
// do with each delivered message, and does it through the adapter's acks.
import { CloudflareJobQueue, ackerFor, type QueueMessage, type QueueProducer } from '../../core/adapters/cloudflare-queue.ts';
import type { WireJob } from '../../core/ports/job-queue.ts';

interface Env {
  JOBS: QueueProducer;
  CONTROL: string;
}

export default {
  async queue(batch: { messages: readonly QueueMessage<WireJob>[] }, env: Env): Promise<void> {
    const queue = new CloudflareJobQueue(env.JOBS);
    for (const message of batch.messages) {
      const res = await fetch(`${env.CONTROL}/delivered`, { method: 'POST', body: JSON.stringify({ body: message.body, attempts: message.attempts }) });
      const { action, delayMs } = (await res.json()) as { action: 'done' | 'retry' | 'defer' | 'dead'; delayMs: number };
      const acker = ackerFor(message, queue);
      if (action === 'retry') await acker.retry(delayMs, 'told to');
      else if (action === 'defer') await acker.defer(delayMs);
      else if (action === 'dead') await acker.dead('told to');
      else await acker.done();
    }
  },
};
