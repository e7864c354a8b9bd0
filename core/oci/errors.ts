/**
 * Domain errors. Core code throws these with the facts of what went wrong; only
 * `functions/` turns a code into an HTTP status and the OCI error envelope.
 */
export type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'NAME_INVALID'
  | 'TAG_INVALID'
  | 'NAME_UNKNOWN'
  | 'PAGINATION_NUMBER_INVALID'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'RANGE_INVALID'
  | 'UPSTREAM_INVALID'
  | 'UNAVAILABLE'
  | 'UNKNOWN'
  // pullthrough's own, for the sandbox API (/api/...)
  | 'LAYER_UNKNOWN'
  | 'LAYER_INVALID'
  | 'FILE_UNKNOWN'
  | 'PLATFORM_INVALID'
  | 'PLATFORM_UNKNOWN'
  // Ours, for the operator API (/api/warm, /api/import).
  | 'REQUEST_INVALID'
  | 'WARM_UNKNOWN';

export type ErrorDetail = Record<string, unknown>;

export class OciError extends Error {
  readonly code: ErrorCode;
  readonly detail: ErrorDetail | undefined;
  /** Seconds the client should wait, when the upstream said so (429, 503). */
  readonly retryAfterSeconds: number | undefined;
  /**
   * Whether trying the same thing again later can succeed (an unreachable or rate-limiting
   * upstream, a cut transfer), said where the error is thrown. Jobs retry on it; nothing
   * else decides retries.
   */
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, detail?: ErrorDetail, opts?: { cause?: unknown; retryAfterSeconds?: number | undefined; retryable?: boolean }) {
    super(message, { cause: opts?.cause });
    this.name = 'OciError';
    this.code = code;
    this.detail = detail;
    this.retryAfterSeconds = opts?.retryAfterSeconds;
    this.retryable = opts?.retryable ?? false;
  }
}

export const isOciError = (e: unknown): e is OciError => e instanceof OciError;

/** Content did not hash to what it claimed: never store or serve it. A cut or corrupted transfer may be, so it is retryable. */
export class DigestMismatchError extends OciError {
  constructor(expected: string, actual: string) {
    super('UPSTREAM_INVALID', 'content does not match its digest', { expected, actual }, { retryable: true });
  }
}

/** Content was longer or shorter than its descriptor said (retryable, like a digest mismatch). */
export class SizeMismatchError extends OciError {
  constructor(expected: number, actual: number, digest?: string) {
    super('UPSTREAM_INVALID', 'content size does not match its descriptor', { digest, expected, actual }, { retryable: true });
  }
}

/**
 * A failure that is not the client's or the upstream's content: a network error, a store
 * write that failed. Retryable. What an unknown error in a job counts as.
 */
export class TransientError extends Error {
  readonly retryable = true;
}

/**
 * The first of `codes` found on `e`, its causes or, for an AggregateError (a connection
 * tried over IPv4 and IPv6), its errors: how "nothing answers there" is told apart from
 * other failures, however deep fetch, the SDK or libSQL wrapped it.
 */
export function errorCodeIn(e: unknown, codes: ReadonlySet<string>): string | undefined {
  type Coded = { code?: unknown; cause?: unknown; errors?: unknown[] } | undefined;
  for (let err = e as Coded, depth = 0; err && typeof err === 'object' && depth < 5; err = err.cause as Coded, depth++) {
    if (typeof err.code === 'string' && codes.has(err.code)) return err.code;
    const inner = err.errors?.find((x) => codes.has((x as { code?: string } | undefined)?.code ?? ''));
    if (inner) return (inner as { code: string }).code;
  }
  return undefined;
}

/** An error's message with URLs removed: they may carry signed credentials or tokens. */
export const redactUrls = (message: string): string => message.replace(/https?:\/\/\S+/g, '<url>');

/**
 * The blob store cannot be used as configured (credentials, endpoint, bucket, directory):
 * no retry helps until an operator fixes `variable`. Clients see UNAVAILABLE with the
 * variable and the problem; `context` (bucket, endpoint: never a secret) is for the log.
 */
export class StoreUnavailableError extends OciError {
  readonly variable: string;
  readonly problem: string;
  readonly context: Record<string, string | undefined>;

  constructor(variable: string, problem: string, context: Record<string, string | undefined> = {}, cause?: unknown) {
    // Retryable: once the operator fixes the variable, the same job succeeds (attempts bound it).
    super('UNAVAILABLE', 'the blob store cannot be used', { variable, problem }, { cause, retryable: true });
    this.variable = variable;
    this.problem = problem;
    this.context = context;
  }
}
