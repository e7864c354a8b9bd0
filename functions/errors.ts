import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { OciError, StoreUnavailableError, isOciError, type ErrorCode } from '../core/oci/errors.ts';

/** Wire descriptors: the HTTP status for each code (the distribution spec's, plus ours). */
const STATUS: Record<ErrorCode, ContentfulStatusCode> = {
  BLOB_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  NAME_INVALID: 400,
  TAG_INVALID: 400,
  NAME_UNKNOWN: 404,
  PAGINATION_NUMBER_INVALID: 400,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  UPSTREAM_INVALID: 502,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
  LAYER_UNKNOWN: 404,
  LAYER_INVALID: 502,
  FILE_UNKNOWN: 404,
  PLATFORM_INVALID: 400,
  PLATFORM_UNKNOWN: 404,
  REQUEST_INVALID: 400,
  WARM_UNKNOWN: 404,
};

export const statusOf = (code: ErrorCode): ContentfulStatusCode => STATUS[code];

/**
 * The one place an error becomes an HTTP response: `{"errors":[{code,message,detail}]}`
 * with the code's status (used by the app's `onError` and by the Worker entry point when
 * it cannot build the app). Anything that is not an OciError is UNKNOWN, logged.
 */
export function errorResponse(err: unknown): Response {
  const e: OciError = isOciError(err) ? err : new OciError('UNKNOWN', 'internal error');
  if (!isOciError(err)) console.error(JSON.stringify({ level: 'error', msg: 'unhandled error', error: String(err) }));
  // What to fix goes to the operator's log, with the values; the client gets the variable.
  if (err instanceof StoreUnavailableError) console.error(JSON.stringify({ level: 'error', msg: 'the blob store cannot be used', fix: err.variable, problem: err.problem, ...err.context }));
  const headers = new Headers({ 'Content-Type': 'application/json', 'Docker-Distribution-API-Version': 'registry/2.0' });
  if (e.retryAfterSeconds !== undefined) headers.set('Retry-After', String(e.retryAfterSeconds));
  return new Response(JSON.stringify({ errors: [{ code: e.code, message: e.message, detail: e.detail ?? null }] }), { status: statusOf(e.code), headers });
}
