// The Cloudflare Workers entry point: the same app and jobs as Node, with Turso for
// metadata, an S3-compatible bucket for blobs and Cloudflare Queues for jobs.
import { parseConfig, ConfigError, type Config, type ConfigEnv } from '../core/config.ts';
import { connectDatabase } from '../core/adapters/libsql.ts';
import { LibsqlCatalog } from '../core/adapters/libsql-catalog.ts';
import { CloudflareJobQueue, ackerFor, type QueueMessage, type QueueProducer } from '../core/adapters/cloudflare-queue.ts';
import type { WireJob } from '../core/ports/job-queue.ts';
import { OciError } from '../core/oci/errors.ts';
import { createApp } from '../functions/app.ts';
import { errorResponse } from '../functions/errors.ts';
import type { ExecutionContext } from 'hono';
import { buildDeps, storeFor, type Deps } from './deps.ts';
import { handleJob } from './jobs.ts';

/** The subset of the Workers runtime types this entry point uses. */
export interface MessageBatch<Body> {
  readonly queue: string;
  readonly messages: readonly QueueMessage<Body>[];
}

/** Bindings (wrangler.toml), vars and secrets: every variable of core/config.ts's schema. */
export type Env = ConfigEnv & {
  /** Queue producer binding for jobs (ingest, extract, prepare-layers). */
  INGEST_QUEUE: QueueProducer;
};

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
interface Built {
  config: Config;
  deps: Deps;
  queue: CloudflareJobQueue;
  app: ReturnType<typeof createApp>;
}

const built = new WeakMap<Env, Built>();

function depsFor(env: Env): Built {
  let entry = built.get(env);
  if (!entry) {
    const config = workerConfig(env);
    const { db } = connectDatabase(config.libsqlUrl, config.libsqlAuthToken);
    const queue = new CloudflareJobQueue(env.INGEST_QUEUE);
    const deps = buildDeps(config, { catalog: new LibsqlCatalog(db), store: storeFor(config), queue, log });
    entry = { config, deps, queue, app: createApp(deps.app) };
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
      return errorResponse(new OciError('UNAVAILABLE', 'the mirror is misconfigured'));
    }
    return app.fetch(request, env, ctx);
  },

  /**
   * Jobs, run by workers/jobs.ts exactly as on Node; only the acks are Cloudflare's
   * (core/adapters/cloudflare-queue.ts ackerFor). Attempts beyond INGEST_MAX_ATTEMPTS
   * count as permanent; malformed messages are acked.
   */
  async queue(batch: MessageBatch<WireJob>, env: Env): Promise<void> {
    const { config, deps, queue } = depsFor(env);
    for (const message of batch.messages) {
      const body = message.body;
      await handleJob(deps, { kind: body?.kind, payload: body?.payload, attempt: message.attempts, owner: `cf-${message.id}` }, config.ingestMaxAttempts, ackerFor(message, queue));
    }
    await deps.pulls.flush();
  },

  /** The cron trigger, reserved for cache maintenance (garbage collection comes later). */
  async scheduled(): Promise<void> {
    log({ msg: 'scheduled', maintenance: 'none yet' });
  },
};
