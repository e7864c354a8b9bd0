// The JSON the sandbox API sends (snake_case, a public format), shared with cli/, which
// reads it. Core speaks camelCase; the conversion is here.
import type { RootfsPlan } from '../core/sandbox/plan.ts';
import type { GcReport } from '../core/cache/gc.ts';
import type { Status } from '../core/registry/status.ts';
import type { WarmStatus } from '../core/cache/warm.ts';

export interface WireLayer {
  /** The compressed blob, as in the manifest. */
  digest: string;
  diff_id: string;
  media_type: string;
  compression: 'gzip' | 'zstd' | 'none';
  /** Compressed size, from the manifest. */
  size: number;
  /** Bytes in layer.tar, once extracted. */
  uncompressed_size: number | null;
  /** `absent` when extraction is off and the layer was never extracted. */
  state: 'pending' | 'extracting' | 'ready' | 'failed' | 'absent';
  error: string | null;
  file_count: number | null;
  toc_digest: string | null;
  /** Bucket keys (a public contract). */
  tar_key: string;
  toc_key: string;
  /** For a ready layer: presigned bucket URLs when the store has them, else this server's. */
  tar_url?: string;
  toc_url?: string;
  files_url?: string;
}

/** The plan's own fields as core has them; the layers and the expiry in the wire format. */
export interface WirePlan extends Omit<RootfsPlan, 'urlsExpireAt' | 'layers'> {
  /**
   * When the presigned URLs stop working (ISO 8601, rounded down to the second as S3
   * counts it), so a client can ask for the plan again before; absent without them.
   */
  urls_expire_at?: string;
  /**
   * On a mirror with access control: a short-lived token for this repository's layer URLs
   * of this server, already in `tar_url` and `toc_url`; add it to `files_url` requests as
   * `?access_token=` (or `Authorization: Bearer`). Its expiry counts in `urls_expire_at`.
   */
  access_token?: string;
  layers: WireLayer[];
}

/** A garbage-collection run as `POST /api/gc` reports it (read by `pullthrough gc`). */
export interface WireGcReport {
  ran: boolean;
  dry_run: boolean;
  started_at: string;
  ms: number;
  totals: Record<string, { count: number; bytes: number }>;
  done_jobs: number;
  activity_windows: number;
  warm_runs: number;
  items: Array<{ kind: string; key: string; bytes: number; reason?: string }>;
  stored_bytes: { before: number; after: number };
}

export function wireGcReport(report: GcReport): WireGcReport {
  return { ran: report.ran, dry_run: report.dryRun, started_at: report.startedAt, ms: report.ms, totals: report.totals, done_jobs: report.doneJobs, activity_windows: report.activityWindows, warm_runs: report.warmRuns, items: report.items, stored_bytes: report.storedBytes };
}

/** A token the plan's own URLs carry, and when it expires (epoch ms). */
export interface PlanAccess {
  token: string;
  expiresAt: number;
}

/** The plan as sent, with this server's URLs (under `origin`) where the store has none. */
export function wirePlan(plan: RootfsPlan, origin: string, access?: PlanAccess): WirePlan {
  const query = access ? `?access_token=${encodeURIComponent(access.token)}` : '';
  const expiresAt = access && plan.layers.some((l) => l.state === 'ready' && (!l.tarUrl || !l.tocUrl)) ? Math.min(plan.urlsExpireAt ?? Infinity, access.expiresAt) : plan.urlsExpireAt;
  return {
    upstream: plan.upstream,
    name: plan.name,
    manifest: plan.manifest,
    ...(plan.index ? { index: plan.index } : {}),
    config: plan.config,
    platform: plan.platform,
    ready: plan.ready,
    ...(expiresAt !== undefined ? { urls_expire_at: new Date(expiresAt).toISOString() } : {}),
    ...(access ? { access_token: access.token } : {}),
    layers: plan.layers.map((l) => {
      const layer: WireLayer = {
        digest: l.digest,
        diff_id: l.diffId,
        media_type: l.mediaType,
        compression: l.compression,
        size: l.size,
        uncompressed_size: l.uncompressedSize,
        state: l.state,
        error: l.error,
        file_count: l.fileCount,
        toc_digest: l.tocDigest,
        tar_key: l.tarKey,
        toc_key: l.tocKey,
      };
      if (l.state !== 'ready') return layer;
      const base = `${origin}/api/layers/${plan.upstream}/${plan.name}/${l.diffId}`;
      return { ...layer, tar_url: l.tarUrl ?? `${base}/tar${query}`, toc_url: l.tocUrl ?? `${base}/toc${query}`, files_url: `${base}/files/` };
    }),
  };
}

/** camelCase → snake_case, as a type. */
type Snake<S extends string> = S extends `${infer H}${infer T}` ? `${H extends Lowercase<H> ? H : `_${Lowercase<H>}`}${Snake<T>}` : S;
/** The wire form of a core value: snake_case keys, `…At` times as ISO strings. */
export type Wire<T> = T extends Array<infer U> ? Array<Wire<U>> : T extends object ? { [K in keyof T as Snake<K & string>]: K extends `${string}At` ? (null extends T[K] ? string | null : string) : Wire<T[K]> } : T;

/** Converts a core value (plain data) to its wire form (see `Wire`). */
export function toWire<T>(value: T): Wire<T> {
  const convert = (v: unknown, key = ''): unknown => {
    if (Array.isArray(v)) return v.map((x) => convert(x));
    if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), convert(x, k)]));
    if (key.endsWith('At') && typeof v === 'number') return new Date(v).toISOString();
    return v;
  };
  return convert(value) as Wire<T>;
}

/** `GET /api/warm/<id>`: a warm-up's progress (core/cache/warm.ts). */
export type WireWarmStatus = Wire<WarmStatus>;

/** `GET /api/status`: what core/registry/status.ts summarises. */
export type WireStatus = Wire<Status>;

/** Bytes for people: `0 B`, `812 B`, `4.2 kB`, `1.3 GB` (decimal units, as registries report sizes). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let value = bytes;
  let unit = -1;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

/** An error response's body for people: `CODE: message {detail}` from the OCI envelope, else its first 500 characters. */
export function describeErrorBody(text: string): string {
  try {
    const [error] = (JSON.parse(text) as { errors: Array<{ code: string; message: string; detail?: unknown }> }).errors;
    return `${error!.code}: ${error!.message}${error!.detail ? ` ${JSON.stringify(error!.detail)}` : ''}`;
  } catch {
    return text.slice(0, 500);
  }
}
