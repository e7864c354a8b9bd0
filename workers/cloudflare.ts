// The Cloudflare Workers entry point: the same app and ingest job as Node, with Turso for
// metadata, an S3-compatible bucket for blobs and Cloudflare Queues for ingest jobs.
import { parseConfig, ConfigError, type Config } from '../core/config.ts';
import { connectDatabase } from '../core/adapters/libsql.ts';
import { backoffMs, type JobMessage } from '../core/adapters/libsql-queue.ts';
import { createApp } from '../functions/app.ts';
import type { ExecutionContext } from 'hono';
import { buildDeps, runJob, storeFor, type Deps } from './deps.ts';

/** The subset of the Workers runtime types this entry point uses. */
export interface WorkerQueue<Body> {
  sendBatch(messages: Iterable<{ body: Body; delaySeconds?: number }>): Promise<void>;
}
export interface QueueMessage<Body> {
  readonly id: string;
  readonly body: Body;
  readonly attempts: number;
  ack(): void;
  retry(options?: { delaySeconds?: number }): void;
}
export interface MessageBatch<Body> {
  readonly queue: string;
  readonly messages: readonly QueueMessage<Body>[];
}

/** Bindings and vars (wrangler.toml) and secrets (`wrangler secret put`). */
export interface Env {
  /** Queue producer binding for jobs (ingest, extract, prepare-layers). */
  INGEST_QUEUE: WorkerQueue<JobMessage>;
  LIBSQL_URL?: string;
  LIBSQL_AUTH_TOKEN?: string;
  S3_ENDPOINT?: string;
  S3_BUCKET?: string;
  S3_REGION?: string;
  S3_FORCE_PATH_STYLE?: string;
  S3_ACCESS_KEY_ID?: string;
  S3_SECRET_ACCESS_KEY?: string;
  UPSTREAMS?: string;
  DEFAULT_UPSTREAM?: string;
  BLOB_DELIVERY?: string;
  TAG_TTL_SECONDS?: string;
  PRESIGN_TTL_SECONDS?: string;
  INGEST_PART_SIZE_BYTES?: string;
  INGEST_QUEUE_SIZE?: string;
  INGEST_MAX_ATTEMPTS?: string;
  JOB_LEASE_SECONDS?: string;
  EXTRACT?: string;
  PUBLIC_URL?: string;
}

const log = (fields: Record<string, unknown>) => console.log(JSON.stringify(fields));

/** The configuration a Worker can run with: Turso over HTTP(S) and an S3 bucket. Throws ConfigError. */
export function workerConfig(env: Env): Config {
  const strings = Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string'));
  const config = parseConfig(strings);
  if (!env.LIBSQL_URL || config.libsqlUrl.startsWith('file:')) {
    throw new ConfigError('LIBSQL_URL', 'a Worker needs a libsql:// or https:// URL (Turso); files are for Node');
  }
  if (!config.s3) throw new ConfigError('S3_BUCKET', 'a Worker keeps blobs in an S3-compatible bucket: set S3_BUCKET and S3_ENDPOINT');
  return config;
}

/** Parts are built once per isolate and reused across requests and batches. */
const built = new WeakMap<Env, { config: Config; deps: Deps; app: ReturnType<typeof createApp> }>();

function depsFor(env: Env): { config: Config; deps: Deps; app: ReturnType<typeof createApp> } {
  let entry = built.get(env);
  if (!entry) {
    const config = workerConfig(env);
    const { db } = connectDatabase(config.libsqlUrl, config.libsqlAuthToken);
    const queue = { send: (messages: readonly JobMessage[]) => env.INGEST_QUEUE.sendBatch(messages.map((body) => ({ body }))) };
    const deps = buildDeps(config, { db, store: storeFor(config), queue, log });
    entry = { config, deps, app: createApp(deps.app) };
    built.set(env, entry);
  }
  return entry;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    let app: ReturnType<typeof createApp>;
    try {
      app = depsFor(env).app;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      log({ level: 'error', msg: 'bad configuration', error: e.message });
      return Response.json({ errors: [{ code: 'UNAVAILABLE', message: 'the mirror is misconfigured', detail: null }] }, { status: 503 });
    }
    return app.fetch(request, env, ctx);
  },

  /**
   * Jobs (ingest, extract, prepare-layers): ack when done, retry with backoff on a
   * transient failure, ack a permanent failure once it is recorded on its row (attempts
   * beyond INGEST_MAX_ATTEMPTS count as permanent; the queue's dead-letter queue is the
   * backstop for a consumer that crashes). Unknown or malformed messages are acked.
   */
  async queue(batch: MessageBatch<JobMessage>, env: Env): Promise<void> {
    const { config, deps } = depsFor(env);
    for (const message of batch.messages) {
      const kind = message.body?.kind;
      const result = await runJob(deps, { kind, payload: message.body?.payload }, `cf-${message.id}`, message.attempts);
      const { subject } = result;
      if (result.ok) {
        message.ack();
      } else if (result.retry && message.attempts < config.ingestMaxAttempts) {
        const delaySeconds = Math.ceil(backoffMs(message.attempts) / 1000);
        log({ level: 'warn', msg: `${kind} failed`, ...subject, error: result.error, attempt: message.attempts, retryInSeconds: delaySeconds });
        message.retry({ delaySeconds });
      } else {
        log({ level: 'error', msg: `${kind} failed for good`, id: message.id, ...subject, error: result.error, attempt: message.attempts });
        message.ack();
      }
    }
  },

  /** The cron trigger, reserved for cache maintenance (garbage collection comes later). */
  async scheduled(): Promise<void> {
    log({ msg: 'scheduled', maintenance: 'none yet' });
  },
};
