// One JobQueue suite, run on every adapter on real components: the libSQL queue on a
// database file and over HTTP, and Cloudflare Queues under Miniflare (workerd), whose
// consumer acks through the adapter (test/setup/queue-worker.ts). The libSQL queue also
// takes several processes draining it at once.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:http';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { Miniflare, convertV4MiniflareOptions } from 'miniflare';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { LibsqlJobQueue } from '../../core/adapters/libsql-queue.ts';
import { CloudflareJobQueue, type QueueProducer } from '../../core/adapters/cloudflare-queue.ts';
import { fromWire, type JobMessage, type JobQueue, type WireJob } from '../../core/ports/job-queue.ts';
import { startHranaServer, type HranaServer } from '../setup/hrana-server.ts';

const run = promisify(execFile);
const dir = await mkdtemp(join(tmpdir(), 'pt-queue-'));
const cleanups: Array<() => Promise<void> | void> = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

type Action = 'done' | 'retry' | 'defer' | 'dead';
interface Delivered {
  message: JobMessage;
  attempt: number;
  ack(action: Action, delayMs?: number): Promise<void>;
}
interface Harness {
  queue: JobQueue;
  /** The next delivery, or undefined when none comes within `withinMs`. */
  next(withinMs: number): Promise<Delivered | undefined>;
}
interface Adapter {
  name: string;
  start(label: string): Promise<Harness & { url?: string; authToken?: string }>;
}

/** A libSQL queue's deliveries: what a consumer claims, polled as the Node consumer does. */
async function libsqlHarness(url: string, authToken?: string): Promise<Harness & { url: string; authToken?: string }> {
  const { db, close } = await openDatabase(url, authToken);
  cleanups.push(close);
  const queue = new LibsqlJobQueue(db);
  return {
    queue,
    url,
    ...(authToken ? { authToken } : {}),
    async next(withinMs) {
      const deadline = Date.now() + withinMs;
      for (;;) {
        const job = await queue.claim('suite', 60_000);
        if (job) {
          const acker = queue.ackerFor(job, 'suite');
          return {
            message: fromWire(job.kind, JSON.parse(job.payload))!,
            attempt: job.attempts,
            ack: async (action, delayMs = 0) => void (await (action === 'retry' ? acker.retry(delayMs, 'told to') : action === 'defer' ? acker.defer(delayMs) : action === 'dead' ? acker.dead('told to') : acker.done())),
          };
        }
        if (Date.now() > deadline) return undefined;
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}

/** Cloudflare Queues under Miniflare: the consumer Worker posts each delivery here and waits for the test's decision. */
async function cloudflareHarness(): Promise<Harness> {
  const arrived: Array<{ delivered: Delivered }> = [];
  const waiting: Array<() => void> = [];
  const control: Server = createServer((req, res) => {
    let text = '';
    req.setEncoding('utf8').on('data', (d: string) => (text += d));
    req.on('end', () => {
      const { body, attempts } = JSON.parse(text) as { body: WireJob; attempts: number };
      arrived.push({
        delivered: {
          message: fromWire(body.kind, body.payload)!,
          attempt: attempts,
          ack: async (action, delayMs = 0) => void res.end(JSON.stringify({ action, delayMs })),
        },
      });
      for (const wake of waiting.splice(0)) wake();
    });
  });
  await new Promise<void>((r) => control.listen(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => (control.closeAllConnections(), control.close(() => r()))));
  const port = (control.address() as { port: number }).port;
  const bundle = await build({ entryPoints: [join(import.meta.dirname, '../setup/queue-worker.ts')], bundle: true, format: 'esm', platform: 'neutral', write: false });
  // Miniflare 5 takes the v4 option shape (its README's) through its converter.
  const mf = new Miniflare(convertV4MiniflareOptions({
    host: '127.0.0.1',
    // Nothing leaves the machine.
    telemetry: { enabled: false },
    logRequests: false,
    workers: [
      {
        name: 'queue-suite',
        modules: true,
        script: bundle.outputFiles[0]!.text,
        compatibilityDate: '2026-10-20',
        bindings: { CONTROL: `http://127.0.0.1:${port}` },
        queueProducers: { JOBS: { queueName: 'jobs' } },
        queueConsumers: { jobs: { maxBatchSize: 1, maxBatchTimeout: 0, maxRetries: 10 } },
      },
    ],
  }));
  await mf.ready;
  cleanups.push(() => mf.dispose());
  const producer = (await mf.getQueueProducer('JOBS')) as unknown as QueueProducer;
  return {
    queue: new CloudflareJobQueue(producer),
    async next(withinMs) {
      const deadline = Date.now() + withinMs;
      while (arrived.length === 0) {
        const left = deadline - Date.now();
        if (left <= 0) return undefined;
        await new Promise<void>((r) => {
          const t = setTimeout(r, left);
          waiting.push(() => (clearTimeout(t), r()));
        });
      }
      return arrived.shift()!.delivered;
    },
  };
}

const adapters: Adapter[] = [
  { name: 'libSQL queue (file)', start: (label) => libsqlHarness(`file:${join(dir, `${label}.db`)}`) },
  {
    name: 'libSQL queue (HTTP)',
    async start(label) {
      const server: HranaServer = await startHranaServer(join(dir, `${label}-http.db`));
      cleanups.push(() => server.stop());
      return libsqlHarness(server.url, server.authToken);
    },
  },
  { name: 'Cloudflare Queues (Miniflare)', start: () => cloudflareHarness() },
];

const hex = (n: number) => n.toString(16).padStart(64, '0');
const QUIET_MS = 2500;

for (const adapter of adapters) {
  describe(`JobQueue conformance: ${adapter.name}`, () => {
    let h: Harness;
    before(async () => {
      h = await adapter.start('suite');
    });

    test('every kind of message arrives as the same typed message, and a done one does not come back', async () => {
      const sent: JobMessage[] = [
        { kind: 'ingest', digest: `sha256:${hex(1)}` },
        { kind: 'extract', diffId: `sha256:${hex(2)}` },
        { kind: 'prepare-layers', upstream: 'docker.io', name: 'library/alpine', manifest: `sha256:${hex(3)}` },
      ];
      await h.queue.send(sent);
      const got: JobMessage[] = [];
      for (let i = 0; i < sent.length; i++) {
        const d = await h.next(10_000);
        assert.ok(d, `delivery ${i + 1} of ${sent.length}`);
        assert.equal(d.attempt, 1);
        got.push(d.message);
        await d.ack('done');
      }
      const byKind = (a: JobMessage, b: JobMessage) => a.kind.localeCompare(b.kind);
      assert.deepEqual(got.sort(byKind), [...sent].sort(byKind));
      assert.equal(await h.next(QUIET_MS), undefined, 'nothing more');
    });

    test('a retried message comes back after its delay as the next attempt', async () => {
      const m: JobMessage = { kind: 'ingest', digest: `sha256:${hex(10)}` };
      await h.queue.send([m]);
      const first = await h.next(10_000);
      assert.deepEqual([first?.message, first?.attempt], [m, 1]);
      const acked = Date.now();
      await first!.ack('retry', 1000);
      const second = await h.next(15_000);
      assert.deepEqual([second?.message, second?.attempt], [m, 2]);
      assert.ok(Date.now() - acked >= 900, 'not before its delay');
      await second!.ack('done');
      assert.equal(await h.next(QUIET_MS), undefined);
    });

    test('a deferred message comes back after its delay without using up an attempt', async () => {
      const m: JobMessage = { kind: 'extract', diffId: `sha256:${hex(20)}` };
      await h.queue.send([m]);
      const first = await h.next(10_000);
      await first!.ack('defer', 1000);
      const second = await h.next(15_000);
      assert.deepEqual([second?.message, second?.attempt], [m, 1]);
      await second!.ack('done');
    });

    test('a dead message is not delivered again', async () => {
      const m: JobMessage = { kind: 'ingest', digest: `sha256:${hex(30)}` };
      await h.queue.send([m]);
      const first = await h.next(10_000);
      assert.deepEqual(first?.message, m);
      await first!.ack('dead');
      assert.equal(await h.next(QUIET_MS), undefined);
    });

    if (adapter.name.startsWith('libSQL')) {
      test('one live job per key: sending it again while queued or running makes no second delivery', async () => {
        const m: JobMessage = { kind: 'ingest', digest: `sha256:${hex(40)}` };
        await h.queue.send([m, m]);
        const d = await h.next(10_000);
        await h.queue.send([m]);
        assert.equal(await h.next(500), undefined);
        await d!.ack('done');
      });

      test('several processes draining one queue at once get every job exactly once, without an error', async () => {
        const fresh = await adapter.start('processes');
        const count = 120;
        await fresh.queue.send(Array.from({ length: count }, (_, i) => ({ kind: 'ingest' as const, digest: `sha256:${hex(1000 + i)}` })));
        const results = await Promise.all(
          ['p1', 'p2', 'p3'].map(async (who) => {
            const { stdout } = await run(process.execPath, [join(import.meta.dirname, '../setup/queue-claimer.ts'), fresh.url!, fresh.authToken ?? '', who]);
            return JSON.parse(stdout.trim().split('\n').at(-1)!) as { keys: string[]; errors: string[] };
          }),
        );
        assert.deepEqual(results.flatMap((r) => r.errors), []);
        const keys = results.flatMap((r) => r.keys);
        assert.equal(keys.length, count, 'no job claimed twice');
        assert.equal(new Set(keys).size, count, 'every job claimed');
      });
    }
  });
}
