import type { UpstreamConfig } from './adapters/http-upstream.ts';

export const DEFAULT_UPSTREAMS: Readonly<Record<string, UpstreamConfig>> = {
  'docker.io': { url: 'https://registry-1.docker.io' },
  'ghcr.io': { url: 'https://ghcr.io' },
  'quay.io': { url: 'https://quay.io' },
  'registry.k8s.io': { url: 'https://registry.k8s.io' },
  'gcr.io': { url: 'https://gcr.io' },
  'public.ecr.aws': { url: 'https://public.ecr.aws' },
};

const MIN_PART_SIZE_BYTES = 5 * 1024 * 1024;

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
  /** On SIGTERM/SIGINT, how long running requests and jobs get to finish before jobs are released. */
  stopGraceSeconds: number;
  /** When layers are extracted for sandboxes: after ingest, when first asked for, or never. */
  extract: ExtractMode;
  /** How clients reach this server (behind a proxy), for the URLs it hands out; else the request's origin. */
  publicUrl: string | undefined;
}

export const EXTRACT_MODES = ['eager', 'on-demand', 'off'] as const;
export type ExtractMode = (typeof EXTRACT_MODES)[number];

/** A configuration problem, naming the variable at fault. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

function integer(env: Env, name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `expected a whole number, got ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

function boolean(env: Env, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (/^(1|true|yes)$/i.test(raw)) return true;
  if (/^(0|false|no)$/i.test(raw)) return false;
  throw new ConfigError(name, `expected true or false, got ${JSON.stringify(raw)}`);
}

function upstreams(env: Env): Record<string, UpstreamConfig> {
  const raw = env.UPSTREAMS;
  const merged: Record<string, UpstreamConfig> = { ...DEFAULT_UPSTREAMS };
  if (raw === undefined || raw === '') return merged;
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
  const dataDir = env.DATA_DIR || './data';
  const s3: S3Config | undefined = env.S3_BUCKET
    ? {
        endpoint: env.S3_ENDPOINT || undefined,
        bucket: env.S3_BUCKET,
        region: env.S3_REGION || 'us-east-1',
        accessKeyId: env.S3_ACCESS_KEY_ID || undefined,
        secretAccessKey: env.S3_SECRET_ACCESS_KEY || undefined,
        forcePathStyle: boolean(env, 'S3_FORCE_PATH_STYLE', false),
      }
    : undefined;
  if (s3?.endpoint !== undefined && !URL.canParse(s3.endpoint)) throw new ConfigError('S3_ENDPOINT', 'is not a URL');
  if (s3 && (s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined)) {
    throw new ConfigError(s3.accessKeyId === undefined ? 'S3_ACCESS_KEY_ID' : 'S3_SECRET_ACCESS_KEY', 'set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither');
  }
  const delivery = env.BLOB_DELIVERY || (s3 ? 'redirect' : 'stream');
  if (delivery !== 'redirect' && delivery !== 'stream') throw new ConfigError('BLOB_DELIVERY', `must be "redirect" or "stream", got ${JSON.stringify(delivery)}`);
  if (delivery === 'redirect' && !s3) throw new ConfigError('BLOB_DELIVERY', '"redirect" needs an S3 bucket (S3_BUCKET); the filesystem store can only stream');
  const ups = upstreams(env);
  const defaultUpstream = env.DEFAULT_UPSTREAM || 'docker.io';
  if (!ups[defaultUpstream]) throw new ConfigError('DEFAULT_UPSTREAM', `${JSON.stringify(defaultUpstream)} is not a configured upstream`);
  const tlsCert = env.TLS_CERT || undefined;
  const tlsKey = env.TLS_KEY || undefined;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) throw new ConfigError(tlsCert ? 'TLS_KEY' : 'TLS_CERT', 'set both TLS_CERT and TLS_KEY, or neither');
  const extract = (env.EXTRACT || 'on-demand') as ExtractMode;
  if (!EXTRACT_MODES.includes(extract)) throw new ConfigError('EXTRACT', `must be one of ${EXTRACT_MODES.join(', ')}, got ${JSON.stringify(extract)}`);
  const libsqlUrl = env.LIBSQL_URL || `file:${dataDir.replace(/\/+$/, '')}/pullthrough.db`;
  const publicUrl = env.PUBLIC_URL ? originOf('PUBLIC_URL', env.PUBLIC_URL) : undefined;
  if (!/^(file|libsql|https?|wss?):/.test(libsqlUrl)) throw new ConfigError('LIBSQL_URL', 'must be a file:, libsql:, http(s): or ws(s): URL');
  return {
    host: env.HOST || '127.0.0.1',
    port: integer(env, 'PORT', 5000, 0, 65535),
    dataDir,
    libsqlUrl,
    libsqlAuthToken: env.LIBSQL_AUTH_TOKEN || undefined,
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
    extract,
    publicUrl,
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
