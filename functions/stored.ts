import type { ByteRange } from '../core/ports/blob-store.ts';

/**
 * A response for bytes read from the store: 206 with `Content-Range` for a range, else
 * 200, `Accept-Ranges: bytes` either way, no body for HEAD. `headers` carries the rest
 * (content type, digests).
 */
export function storedResponse(method: 'GET' | 'HEAD', headers: Headers, size: number, range: ByteRange | undefined, body: ReadableStream<Uint8Array> | undefined): Response {
  headers.set('Accept-Ranges', 'bytes');
  if (range) {
    headers.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`);
    headers.set('Content-Length', String(range.end - range.start + 1));
  } else {
    headers.set('Content-Length', String(size));
  }
  return new Response(method === 'HEAD' ? null : body, { status: range ? 206 : 200, headers });
}
