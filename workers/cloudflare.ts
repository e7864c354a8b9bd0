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
import { runGc } from '../core/cache/gc.ts';
import { CloudflareRateLimiter, type RateLimitBinding } from '../core/adapters/cloudflare-rate-limiter.ts';
import { MemoryRateLimiter } from '../core/auth/rate-limit.ts';
import { CloudflareSharedCache, type EdgeCache } from '../core/adapters/cloudflare-cache.ts';
import type { NativeDecoders } from '../core/layer/decompress.ts';

/** The period of the COLD_RATE_LIMITER binding in wrangler.toml (`simple.period`): how long a refused caller waits. */
const RATE_LIMIT_PERIOD_SECONDS = 60;

/** The subset of the Workers runtime types this entry point uses. */
export interface MessageBatch<Body> {
  readonly queue: string;
  readonly messages: readonly QueueMessage<Body>[];
}

/** Bindings (wrangler.toml), vars and secrets: every variable of core/config.ts's schema. */
export type Env = ConfigEnv & {
  /** Queue producer binding for jobs (ingest, extract, prepare-layers). */
  INGEST_QUEUE: QueueProducer;
  /** Optional Rate Limiting binding for the cold-work limit, counted by Cloudflare across isolates. */
  COLD_RATE_LIMITER?: RateLimitBinding;
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
  // A Worker is a public URL: it never serves on the zero-config default rules.
  if (config.auth.defaultRules) throw new ConfigError('AUTH_RULES', 'a Worker serves a public URL: set AUTH_RULES, e.g. "pull docker.io/library/* to anonymous" (README: Access control)');
  if (config.auth.keysGenerated && !(config.auth.users.size === 0 && config.auth.tokens.size === 0)) {
    throw new ConfigError('AUTH_TOKEN_KEYS', 'isolates must share the keys that sign tokens: wrangler secret put AUTH_TOKEN_KEYS ("<key id>:<32+ random bytes, base64url>")');
  }
  // HOST means nothing here: the loopback default of the limit is Node's.
  return env.COLD_RATE_PER_MINUTE ? config : { ...config, coldRatePerMinute: 120 };
}

/** Parts are built once per isolate and reused across requests and batches. */
interface Built {
  config: Config;
  deps: Deps;
  queue: CloudflareJobQueue;
  app: ReturnType<typeof createApp>;
}

const built = new WeakMap<Env, Built>();

/** workerd's own gzip decoder (it has no zstd: fzstd decodes those), checking the trailer fflate does not. */
const workerdDecoders: NativeDecoders = { gzip: () => new DecompressionStream('gzip') as unknown as TransformStream<Uint8Array, Uint8Array> };

/** The data center's Cache API, where the runtime has one. */
const edgeCache = (globalThis as { caches?: { default?: EdgeCache } }).caches?.default;

function depsFor(env: Env): Built {
  let entry = built.get(env);
  if (!entry) {
    const config = workerConfig(env);
    const { db } = connectDatabase(config.libsqlUrl, config.libsqlAuthToken);
    const queue = new CloudflareJobQueue(env.INGEST_QUEUE);
    const limiter = env.COLD_RATE_LIMITER
      ? new CloudflareRateLimiter(env.COLD_RATE_LIMITER, RATE_LIMIT_PERIOD_SECONDS)
      : config.coldRatePerMinute > 0
        ? new MemoryRateLimiter(config.coldRatePerMinute)
        : undefined;
    const deps = buildDeps(config, {
      catalog: new LibsqlCatalog(db),
      store: storeFor(config),
      queue,
      log,
      ...(limiter ? { limiter } : {}),
      // Set by Cloudflare's edge, which a client cannot forge.
      clientAddress: (c) => c.req.header('cf-connecting-ip'),
      ...(edgeCache ? { sharedCache: new CloudflareSharedCache(edgeCache, new URL(config.libsqlUrl).host) } : {}),
      decoders: workerdDecoders,
    });
    entry = { config, deps, queue, app: createApp(deps.app) };
    built.set(env, entry);
  }
  return entry;
}

/** What to do about a configuration error, for the 503: the message only when it cannot carry a value (a missing variable). */
function fixFor(e: ConfigError): string {
  return /^[A-Z_]+: (a Worker |isolates must)/.test(e.message) ? e.message : `fix ${e.variable} (the Worker's log says what is wrong with it)`;
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    let app: ReturnType<typeof createApp>;
    try {
      app = depsFor(env).app;
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      log({ level: 'error', msg: 'bad configuration', error: e.message });
      // The variable to set, not its value (it may be a secret).
      return errorResponse(new OciError('UNAVAILABLE', 'the mirror is misconfigured', { variable: e.variable, fix: fixFor(e) }));
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

  /** The cron trigger: one garbage-collection run (core/cache/gc.ts; its lease keeps it to one at a time). */
  async scheduled(_controller: unknown, env: Env): Promise<void> {
    const { deps } = depsFor(env);
    await runGc(deps.gc, { owner: `cf-cron-${crypto.randomUUID()}` });
  },
};
