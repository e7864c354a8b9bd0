import type { UpstreamConfig } from './ports/upstream.ts';
import { parsePasswordHash, base64url, type ParsedHash } from './auth/password.ts';
import { parseTokenHash, type AuthConfig } from './auth/access.ts';
import { ANONYMOUS, AUTHENTICATED, defaultRules, parseRules } from './auth/rules.ts';
import { patternProblem } from './auth/patterns.ts';
import type { SigningKey } from './auth/token.ts';
import { parsePlatform, type Platform } from './oci/manifest.ts';

export const DEFAULT_UPSTREAMS: Readonly<Record<string, UpstreamConfig>> = {
  'docker.io': { url: 'https://registry-1.docker.io' },
  'ghcr.io': { url: 'https://ghcr.io' },
  'quay.io': { url: 'https://quay.io' },
  'registry.k8s.io': { url: 'https://registry.k8s.io' },
  'gcr.io': { url: 'https://gcr.io' },
  'public.ecr.aws': { url: 'https://public.ecr.aws' },
};

const MIN_PART_SIZE_BYTES = 5 * 1024 * 1024;

/** Where a variable has meaning: both runtimes, or the Node server only. */
type Runtime = 'both' | 'node';

interface Variable {
  readonly name: string;
  /** The default as the README shows it. */
  readonly default: string;
  readonly doc: string;
  readonly runtime: Runtime;
  /** Set with `wrangler secret put`, never in wrangler.toml. */
  readonly secret?: boolean;
}

/**
 * Every configuration variable, once: the parser reads only these (`read` takes a
 * `VariableName`), the Workers `Env` type is made from them, and the README's table is
 * printed from them (`npm run -s config:table`; test/unit/config.schema.test.ts
 * holds README and wrangler.toml to this list).
 */
export const VARIABLES = [
  { name: 'HOST', default: '`127.0.0.1`', doc: 'listen address of the Node server', runtime: 'node' },
  { name: 'PORT', default: '`5000`', doc: 'listen port (0: any free port)', runtime: 'node' },
  { name: 'DATA_DIR', default: '`./data`', doc: 'libSQL file and filesystem blob store', runtime: 'node' },
  { name: 'LIBSQL_URL', default: '`file:$DATA_DIR/pullthrough.db`', doc: 'metadata database: a file, or Turso (`libsql://`, `https://`; a Worker needs Turso)', runtime: 'both' },
  { name: 'LIBSQL_AUTH_TOKEN', default: 'unset', doc: 'Turso auth token', runtime: 'both', secret: true },
  { name: 'S3_BUCKET', default: 'unset', doc: 'when set, blobs go to this S3 bucket instead of `DATA_DIR` (a Worker needs one)', runtime: 'both' },
  { name: 'S3_ENDPOINT', default: 'AWS', doc: 'S3-compatible endpoint (R2, MinIO, Ceph RGW)', runtime: 'both' },
  { name: 'S3_REGION', default: '`us-east-1`', doc: 'bucket region (`auto` for R2)', runtime: 'both' },
  { name: 'S3_FORCE_PATH_STYLE', default: '`false`', doc: 'path-style bucket URLs (MinIO, Ceph RGW)', runtime: 'both' },
  { name: 'S3_ACCESS_KEY_ID', default: 'unset', doc: 'S3 credentials (both or neither; else the SDK\'s default chain)', runtime: 'both', secret: true },
  { name: 'S3_SECRET_ACCESS_KEY', default: 'unset', doc: 'see `S3_ACCESS_KEY_ID`', runtime: 'both', secret: true },
  {
    name: 'UPSTREAMS',
    default: 'built-in',
    doc: 'JSON host → `{url, username?, password?}`, merged over docker.io, ghcr.io, quay.io, registry.k8s.io, gcr.io, public.ecr.aws; e.g. `{"docker.io":{"url":"http://127.0.0.1:5100"}}` (a secret when it carries credentials)',
    runtime: 'both',
  },
  { name: 'DEFAULT_UPSTREAM', default: '`docker.io`', doc: 'upstream for names without a configured host prefix', runtime: 'both' },
  { name: 'BLOB_DELIVERY', default: '`redirect` with S3, else `stream`', doc: '`redirect` (307 to a presigned URL) or `stream`', runtime: 'both' },
  { name: 'TAG_TTL_SECONDS', default: '`300`', doc: "how long a tag's resolved digest is reused", runtime: 'both' },
  { name: 'PRESIGN_TTL_SECONDS', default: '`300`', doc: 'lifetime of presigned URLs', runtime: 'both' },
  { name: 'TLS_CERT', default: 'unset', doc: 'serve HTTPS directly: certificate file (with `TLS_KEY`)', runtime: 'node' },
  { name: 'TLS_KEY', default: 'unset', doc: 'its private key file', runtime: 'node' },
  {
    name: 'INGEST_PART_SIZE_BYTES',
    default: '5 MiB',
    doc: 'multipart part size (≥ 5 MiB, so blobs up to ~48 GiB at the default); with `INGEST_QUEUE_SIZE`, the ingest memory budget: 8 MiB × 4 ingests ~35% faster for ~45 MB more RSS',
    runtime: 'both',
  },
  { name: 'INGEST_QUEUE_SIZE', default: '`2`', doc: 'parts in flight per ingest', runtime: 'both' },
  { name: 'INGEST_CONCURRENCY', default: '`2`', doc: 'jobs (ingest, extract) run at once per Node process', runtime: 'node' },
  { name: 'INGEST_MAX_ATTEMPTS', default: '`5`', doc: 'attempts of a job before it fails for good', runtime: 'both' },
  { name: 'JOB_LEASE_SECONDS', default: '`60`', doc: 'lease of a job and of the blob or layer row it works on; renewed every third of it', runtime: 'both' },
  { name: 'MEMORY_CACHE_BYTES', default: '32 MiB', doc: "the in-process cache of tag resolutions, manifests, ready rows and (Node) warm answers (core/registry/memory-cache.ts, functions/replay.ts): its size, manifest bytes included, per process or isolate", runtime: 'both' },
  { name: 'MEMORY_CACHE_ENTRIES', default: '`50000`', doc: 'its entries at most (`0`: no cache)', runtime: 'both' },
  {
    name: 'MEMORY_CACHE_TTL_SECONDS',
    default: '`5` (at most a third of `JOB_LEASE_SECONDS`)',
    doc: "how long a ready blob or layer row is reused without a database read: how late a process sees another's eviction (garbage collection waits this long before deleting)",
    runtime: 'both',
  },
  { name: 'PULL_FLUSH_SECONDS', default: '`10`', doc: 'pull counts and last-pulled times are written in one batch at most this often', runtime: 'both' },
  { name: 'PUBLIC_URL', default: 'unset (the request\'s origin)', doc: 'how clients reach the server, e.g. `https://mirror.example.com` behind a TLS-terminating proxy: the prefix of the URLs in layer plans', runtime: 'both' },
  { name: 'STOP_GRACE_SECONDS', default: '`10`', doc: 'on SIGTERM/SIGINT, how long running requests and jobs may finish before jobs are given back and the server exits', runtime: 'node' },
  { name: 'EXTRACT', default: '`on-demand`', doc: 'when layers are extracted for sandboxes: `eager`, `on-demand` (a plan asks), `off`', runtime: 'both' },
  { name: 'AUTH_USERS', default: 'none', doc: 'JSON user → password hash from `pullthrough hash-password`, e.g. `{"alice":"pbkdf2-sha256$100000$…"}`', runtime: 'both', secret: true },
  { name: 'AUTH_TOKENS', default: 'none', doc: 'JSON token name → hash from `pullthrough new-token` (`sha256:…`): CI tokens, sent as the password of their name or as `Bearer pt_…`', runtime: 'both', secret: true },
  {
    name: 'AUTH_RULES',
    default: 'anonymous pull of every upstream without credentials (a Worker needs it set)',
    doc: 'who may pull what: `;`- or line-separated `<grant> [<pattern>] to <who>, …`, e.g. `pull docker.io/library/* to anonymous; pull ghcr.io/acme/** to alice, ci; admin to alice` (see Access control)',
    runtime: 'both',
  },
  { name: 'AUTH_TOKEN_KEYS', default: 'made at start (a Worker with users or tokens needs it set)', doc: 'keys that sign the tokens of `GET /token`: `<key id>:<secret, base64url of ≥ 32 bytes>`, comma-separated; the first signs, all verify', runtime: 'both', secret: true },
  { name: 'AUTH_TOKEN_TTL_SECONDS', default: '`900`', doc: 'lifetime of the tokens of `GET /token`', runtime: 'both' },
  { name: 'AUTH_SERVICE', default: '`pullthrough`', doc: 'the `service` of the token flow (challenges and token audience)', runtime: 'both' },
  { name: 'WARM_PLATFORMS', default: '`linux/amd64`', doc: 'the platforms a warm-up takes from an image index when the request names none, comma-separated', runtime: 'both' },
  { name: 'CACHE_MAX_BYTES', default: '`0` (no cap)', doc: 'when the stored blobs and extracted layers add up to more, garbage collection evicts the least recently pulled down to `CACHE_LOW_WATER_PERCENT` of it', runtime: 'both' },
  { name: 'CACHE_LOW_WATER_PERCENT', default: '`90`', doc: 'where eviction past `CACHE_MAX_BYTES` stops, in percent of it', runtime: 'both' },
  { name: 'CACHE_MAX_AGE_SECONDS', default: '`0` (none)', doc: 'blobs not pulled for this long are evicted (with their extracted layers)', runtime: 'both' },
  { name: 'CACHE_EVICT_LAYERS', default: '`with-blobs`', doc: 'how extracted layers are evicted past `CACHE_MAX_BYTES`: `with-blobs` (each with its blob), or `first` (the least recently pulled layers go before any blob, which sandboxes then extract again)', runtime: 'both' },
  { name: 'CACHE_PINNED', default: 'none', doc: 'repository patterns never evicted, comma-separated, as in `AUTH_RULES`: e.g. `docker.io/library/*, ghcr.io/acme/**`', runtime: 'both' },
  { name: 'GC_INTERVAL_SECONDS', default: '`3600`', doc: 'how often the Node server runs garbage collection (sweeps of temporaries, stagings, uploads and spools a day old, done jobs a week old); `0`: only on demand (`POST /api/gc`, `pullthrough gc`). Workers run it from the cron trigger', runtime: 'node' },
  { name: 'COLD_RATE_PER_MINUTE', default: '`0` (off) when `HOST` is a loopback address, else `120`', doc: 'requests a minute per identity (per address for anonymous) that may make the mirror contact an upstream; more answer 429 (`0`: no limit)', runtime: 'both' },
] as const satisfies readonly Variable[];

export type VariableName = (typeof VARIABLES)[number]['name'];

/** The variables as a runtime hands them over: strings, each optional. */
export type ConfigEnv = { readonly [K in VariableName]?: string | undefined };

/** The README's table of variables, from VARIABLES. */
export function variablesTable(): string {
  const rows = VARIABLES.map((v) => `| \`${v.name}\` | ${v.default} | ${v.doc}${v.runtime === 'node' ? ' (Node only)' : ''}${'secret' in v && v.secret ? ' (secret)' : ''} |`);
  return ['| variable | default | meaning |', '|---|---|---|', ...rows].join('\n');
}

export interface S3Config {
  endpoint: string | undefined;
  bucket: string;
  region: string;
  accessKeyId: string | undefined;
  secretAccessKey: string | undefined;
  forcePathStyle: boolean;
}

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  libsqlUrl: string;
  libsqlAuthToken: string | undefined;
  s3: S3Config | undefined;
  upstreams: Record<string, UpstreamConfig>;
  defaultUpstream: string;
  blobDelivery: 'redirect' | 'stream';
  tagTtlSeconds: number;
  presignTtlSeconds: number;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  ingestPartSizeBytes: number;
  ingestQueueSize: number;
  ingestConcurrency: number;
  ingestMaxAttempts: number;
  jobLeaseSeconds: number;
  /** core/registry/memory-cache.ts. */
  memoryCache: { maxBytes: number; maxEntries: number; ttlSeconds: number };
  /** On SIGTERM/SIGINT, how long running requests and jobs get to finish before jobs are released. */
  stopGraceSeconds: number;
  /** Pull counts are written in one batch at most this often. */
  pullFlushSeconds: number;
  /** When layers are extracted for sandboxes: after ingest, when first asked for, or never. */
  extract: ExtractMode;
  /** How clients reach this server (behind a proxy), for the URLs it hands out; else the request's origin. */
  publicUrl: string | undefined;
  /** Identities, rules and token keys. */
  auth: AuthConfig;
  /** Cold requests a minute per caller; 0: no limit. */
  coldRatePerMinute: number;
  /** Seconds between garbage collections on Node; 0: on demand only. */
  gcIntervalSeconds: number;
  retention: RetentionConfig;
  /** WARM_PLATFORMS: what a warm-up takes from an index by default. */
  warmPlatforms: Platform[];
}

export interface RetentionConfig {
  /** 0: no cap. */
  maxBytes: number;
  lowWaterPercent: number;
  /** 0: no age bound. */
  maxAgeSeconds: number;
  /** Repository patterns (core/auth/patterns.ts) never evicted. */
  pinned: string[];
  /** `first`: past the cap, extracted layers go before any blob; `with-blobs`: each with its blob. */
  evictLayers: EvictLayers;
}

/** Where eviction past the cap stops, in bytes. */
export const lowWaterBytes = (r: RetentionConfig): number => Math.floor((r.maxBytes * r.lowWaterPercent) / 100);

export const EVICT_LAYERS = ['with-blobs', 'first'] as const;
export type EvictLayers = (typeof EVICT_LAYERS)[number];

export const EXTRACT_MODES = ['eager', 'on-demand', 'off'] as const;
export type ExtractMode = (typeof EXTRACT_MODES)[number];

/** A configuration problem, naming the variable at fault. */
export class ConfigError extends Error {
  readonly variable: string;
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
    this.variable = variable;
  }
}

type Env = ConfigEnv;

/** A variable's value; '' counts as unset. */
const read = (env: Env, name: VariableName): string | undefined => env[name] || undefined;

/** MEMORY_CACHE_*: its TTL must leave an eviction's row lease (JOB_LEASE_SECONDS) time to delete after waiting it out. */
function memoryCache(env: Env): Config['memoryCache'] {
  const jobLeaseSeconds = integer(env, 'JOB_LEASE_SECONDS', 60, 2, 3600);
  return {
    maxBytes: integer(env, 'MEMORY_CACHE_BYTES', 32 * 1024 * 1024, 0),
    maxEntries: integer(env, 'MEMORY_CACHE_ENTRIES', 50_000, 0, 10_000_000),
    ttlSeconds: integer(env, 'MEMORY_CACHE_TTL_SECONDS', Math.min(5, Math.floor(jobLeaseSeconds / 3)), 0, Math.floor(jobLeaseSeconds / 3)),
  };
}

function integer(env: Env, name: VariableName, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function boolean(env: Env, name: VariableName, fallback: boolean): boolean {
  const raw = read(env, name);
  if (raw === undefined) return fallback;
  if (/^(1|true|yes)$/i.test(raw)) return true;
  if (/^(0|false|no)$/i.test(raw)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(raw)}`);
}

function upstreams(env: Env): Record<string, UpstreamConfig> {
  const raw = read(env, 'UPSTREAMS');
  const merged: Record<string, UpstreamConfig> = { ...DEFAULT_UPSTREAMS };
  if (raw === undefined) return merged;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError('UPSTREAMS', 'is not valid JSON');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError('UPSTREAMS', 'must be a JSON object of host → {url, username?, password?}');
  for (const [host, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (!/^[a-z0-9.-]+(:\d+)?$/.test(host)) throw new ConfigError('UPSTREAMS', `${JSON.stringify(host)} is not a registry host`);
    const v = value as Partial<UpstreamConfig> | null;
    if (!v || typeof v !== 'object' || typeof v.url !== 'string') throw new ConfigError('UPSTREAMS', `${host} needs a "url"`);
    let url: URL;
    try {
      url = new URL(v.url);
    } catch {
      throw new ConfigError('UPSTREAMS', `${host}.url is not a URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError('UPSTREAMS', `${host}.url must be http or https`);
    if ((v.username === undefined) !== (v.password === undefined)) throw new ConfigError('UPSTREAMS', `${host} needs both username and password, or neither`);
    merged[host] = { url: v.url, username: v.username, password: v.password };
  }
  return merged;
}

/** Reads and validates the whole configuration once. Throws ConfigError naming the variable. */
export function parseConfig(env: Env): Config {
  const dataDir = read(env, 'DATA_DIR') ?? './data';
  const s3: S3Config | undefined = read(env, 'S3_BUCKET')
    ? {
        endpoint: read(env, 'S3_ENDPOINT'),
        bucket: read(env, 'S3_BUCKET')!,
        region: read(env, 'S3_REGION') ?? 'us-east-1',
        accessKeyId: read(env, 'S3_ACCESS_KEY_ID'),
        secretAccessKey: read(env, 'S3_SECRET_ACCESS_KEY'),
        forcePathStyle: boolean(env, 'S3_FORCE_PATH_STYLE', false),
      }
    : undefined;
  if (s3?.endpoint !== undefined && !URL.canParse(s3.endpoint)) throw new ConfigError('S3_ENDPOINT', 'is not a URL');
  if (s3 && (s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined)) {
    throw new ConfigError(s3.accessKeyId === undefined ? 'S3_ACCESS_KEY_ID' : 'S3_SECRET_ACCESS_KEY', 'set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither');
  }
  const delivery = read(env, 'BLOB_DELIVERY') ?? (s3 ? 'redirect' : 'stream');
  if (delivery !== 'redirect' && delivery !== 'stream') throw new ConfigError('BLOB_DELIVERY', `must be "redirect" or "stream", got ${JSON.stringify(delivery)}`);
  if (delivery === 'redirect' && !s3) throw new ConfigError('BLOB_DELIVERY', '"redirect" needs an S3 bucket (S3_BUCKET); the filesystem store can only stream');
  const ups = upstreams(env);
  const defaultUpstream = read(env, 'DEFAULT_UPSTREAM') ?? 'docker.io';
  if (!ups[defaultUpstream]) throw new ConfigError('DEFAULT_UPSTREAM', `${JSON.stringify(defaultUpstream)} is not a configured upstream`);
  const tlsCert = read(env, 'TLS_CERT');
  const tlsKey = read(env, 'TLS_KEY');
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError(tlsCert ? 'TLS_KEY' : 'TLS_CERT', 'set both TLS_CERT and TLS_KEY, or neither');
  const extract = oneOf(env, 'EXTRACT', EXTRACT_MODES, 'on-demand');
  const libsqlUrl = read(env, 'LIBSQL_URL') ?? `file:${dataDir.replace(/\/+$/, '')}/pullthrough.db`;
  const publicUrl = read(env, 'PUBLIC_URL') ? originOf('PUBLIC_URL', read(env, 'PUBLIC_URL')!) : undefined;
  if (!/^(file|libsql|https?|wss?):/.test(libsqlUrl)) throw new ConfigError('LIBSQL_URL', 'must be a file:, libsql:, http(s): or ws(s): URL');
  return {
    host: read(env, 'HOST') ?? '127.0.0.1',
    port: integer(env, 'PORT', 5000, 0, 65535),
    dataDir,
    libsqlUrl,
    libsqlAuthToken: read(env, 'LIBSQL_AUTH_TOKEN'),
    s3,
    upstreams: ups,
    defaultUpstream,
    blobDelivery: delivery,
    tagTtlSeconds: integer(env, 'TAG_TTL_SECONDS', 300, 0),
    presignTtlSeconds: integer(env, 'PRESIGN_TTL_SECONDS', 300, 1, 7 * 24 * 3600),
    tlsCert,
    tlsKey,
    ingestPartSizeBytes: integer(env, 'INGEST_PART_SIZE_BYTES', MIN_PART_SIZE_BYTES, MIN_PART_SIZE_BYTES, 5 * 1024 * 1024 * 1024),
    ingestQueueSize: integer(env, 'INGEST_QUEUE_SIZE', 2, 1, 64),
    ingestConcurrency: integer(env, 'INGEST_CONCURRENCY', 2, 1, 64),
    ingestMaxAttempts: integer(env, 'INGEST_MAX_ATTEMPTS', 5, 1, 100),
    jobLeaseSeconds: integer(env, 'JOB_LEASE_SECONDS', 60, 2, 3600),
    stopGraceSeconds: integer(env, 'STOP_GRACE_SECONDS', 10, 0, 3600),
    pullFlushSeconds: integer(env, 'PULL_FLUSH_SECONDS', 10, 0, 3600),
    memoryCache: memoryCache(env),
    extract,
    publicUrl,
    auth: auth(env, ups),
    gcIntervalSeconds: integer(env, 'GC_INTERVAL_SECONDS', 3600, 0, 30 * 24 * 3600),
    warmPlatforms: platforms(env, 'WARM_PLATFORMS', 'linux/amd64'),
    retention: {
      maxBytes: integer(env, 'CACHE_MAX_BYTES', 0, 0),
      lowWaterPercent: integer(env, 'CACHE_LOW_WATER_PERCENT', 90, 1, 100),
      maxAgeSeconds: integer(env, 'CACHE_MAX_AGE_SECONDS', 0, 0),
      pinned: pinnedPatterns(env),
      evictLayers: oneOf(env, 'CACHE_EVICT_LAYERS', EVICT_LAYERS, 'with-blobs'),
    },
    coldRatePerMinute: integer(env, 'COLD_RATE_PER_MINUTE', isLoopback(read(env, 'HOST') ?? '127.0.0.1') ? 0 : 120, 0, 1_000_000),
  };
}

/** A comma-separated list of platforms (`os/arch[/variant]`). */
function platforms(env: Env, name: VariableName, fallback: string): Platform[] {
  const items = (read(env, name) ?? fallback).split(',').map((p) => p.trim()).filter(Boolean);
  if (items.length === 0) throw new ConfigError(name, 'must name at least one platform, e.g. linux/amd64');
  return items.map((p) => {
    try {
      return parsePlatform(p);
    } catch {
      throw new ConfigError(name, `${JSON.stringify(p)} is not a platform: expected os/arch[/variant], e.g. linux/arm64/v8`);
    }
  });
}

/** A variable whose value is one of `values`. */
function oneOf<T extends string>(env: Env, name: VariableName, values: readonly T[], fallback: T): T {
  const value = (read(env, name) ?? fallback) as T;
  if (!values.includes(value)) throw new ConfigError(name, `must be one of ${values.join(', ')}, got ${JSON.stringify(value)}`);
  return value;
}

function pinnedPatterns(env: Env): string[] {
  const patterns = (read(env, 'CACHE_PINNED') ?? '').split(/[\s,]+/).filter(Boolean);
  for (const p of patterns) {
    const problem = patternProblem(p);
    if (problem) throw new ConfigError('CACHE_PINNED', `${JSON.stringify(p)}: the pattern ${problem}`);
  }
  return patterns;
}

const isLoopback = (host: string) => /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host);

/** A JSON object of name → string, from a secret: its values are never quoted in errors. */
function secretMap<T>(env: Env, name: VariableName, parse: (value: string) => T | string): Map<string, T> {
  const raw = read(env, name);
  const out = new Map<string, T>();
  if (raw === undefined) return out;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    throw new ConfigError(name, 'is not valid JSON (a JSON object of name → hash)');
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(name, 'must be a JSON object of name → hash');
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$/.test(key) || key === ANONYMOUS || key === AUTHENTICATED) {
      throw new ConfigError(name, `${JSON.stringify(key.slice(0, 64))} is not a usable name (letters, digits, . _ @ -; not ${ANONYMOUS} or ${AUTHENTICATED})`);
    }
    const result = typeof value === 'string' ? parse(value) : 'must be a string';
    if (typeof result === 'string') throw new ConfigError(name, `${key}: ${result}`);
    out.set(key, result);
  }
  return out;
}

function tokenKeys(env: Env): { keys: SigningKey[]; generated: boolean } {
  const raw = read(env, 'AUTH_TOKEN_KEYS');
  if (raw === undefined) return { keys: [{ id: `start-${crypto.randomUUID().slice(0, 8)}`, secret: crypto.getRandomValues(new Uint8Array(32)) }], generated: true };
  const keys = raw.split(',').map((entry, i) => {
    const m = /^\s*([A-Za-z0-9._-]{1,64}):([A-Za-z0-9_-]+)\s*$/.exec(entry);
    const secret = m ? base64url.decode(m[2]!) : undefined;
    if (!m || !secret) throw new ConfigError('AUTH_TOKEN_KEYS', `key ${i + 1} is not <key id>:<secret, base64url>`);
    if (secret.length < 32) throw new ConfigError('AUTH_TOKEN_KEYS', `key ${m[1]}: the secret must be at least 32 bytes (openssl rand -base64 32 | tr '+/' '-_' | tr -d '=')`);
    return { id: m[1]!, secret };
  });
  if (new Set(keys.map((k) => k.id)).size !== keys.length) throw new ConfigError('AUTH_TOKEN_KEYS', 'two keys have the same id');
  return { keys, generated: false };
}

function auth(env: Env, ups: Record<string, UpstreamConfig>): AuthConfig {
  const users = secretMap<ParsedHash>(env, 'AUTH_USERS', parsePasswordHash);
  const tokens = secretMap<Uint8Array>(env, 'AUTH_TOKENS', parseTokenHash);
  for (const name of tokens.keys()) if (users.has(name)) throw new ConfigError('AUTH_TOKENS', `${name} is also a user (AUTH_USERS): rules name either, so names must differ`);
  const text = read(env, 'AUTH_RULES');
  const rules = text === undefined ? defaultRules(Object.entries(ups).filter(([, u]) => u.username === undefined).map(([host]) => host)) : parseRules(text, new Set([...users.keys(), ...tokens.keys()]));
  if (typeof rules === 'string') throw new ConfigError('AUTH_RULES', rules);
  const { keys, generated } = tokenKeys(env);
  const service = read(env, 'AUTH_SERVICE') ?? 'pullthrough';
  if (!/^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/.test(service)) throw new ConfigError('AUTH_SERVICE', 'must be printable ASCII without spaces, quotes or backslashes');
  return {
    users,
    tokens,
    rules,
    defaultRules: text === undefined,
    keys,
    keysGenerated: generated,
    tokenTtlSeconds: integer(env, 'AUTH_TOKEN_TTL_SECONDS', 900, 60, 24 * 3600),
    service,
  };
}

/** An http(s) URL with nothing after its path, as a prefix without a trailing slash. */
function originOf(name: string, raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(name, `not a URL: ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(name, 'must be an http: or https: URL');
  if (url.search || url.hash || url.username || url.password) throw new ConfigError(name, 'must have no credentials, query or fragment');
  return `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
}
