import type { Context } from 'hono';
import type { ByteRange, LocalFile } from '../core/ports/blob-store.ts';
import type { AppEnv } from './env.ts';

/**
 * Sends a local file's bytes as the response from the runtime's own file descriptor to
 * its socket (Node: workers/node.ts), bypassing the web-stream body; undefined when it
 * cannot (the file is gone: the body then fails the same way, before any byte is sent).
 */
export type SendFile = (c: Context<AppEnv>, file: LocalFile, status: number, headers: ResponseHeaders) => Promise<Response | undefined>;

/**
 * Response headers as a plain object with each name spelled once: on Node a plain object
 * goes to the socket as it is, where a `Headers` instance is copied and sorted first.
 */
export type ResponseHeaders = Record<string, string>;

/**
 * A response for bytes read from the store: 206 with `Content-Range` for a range, else
 * 200, `Accept-Ranges: bytes` either way, no body for HEAD. `headers` carries the rest
 * (content type, digests). Bytes in a local file go out from its descriptor where the
 * runtime can send files (`c.var.sendFile`).
 */
export async function storedResponse(
  c: Context<AppEnv>,
  method: 'GET' | 'HEAD',
  headers: ResponseHeaders,
  size: number,
  range: ByteRange | undefined,
  body: ReadableStream<Uint8Array> | undefined,
  file?: LocalFile,
): Promise<Response> {
  headers['Accept-Ranges'] = 'bytes';
  if (range) {
    headers['Content-Range'] = `bytes ${range.start}-${range.end}/${size}`;
    headers['Content-Length'] = String(range.end - range.start + 1);
  } else {
    headers['Content-Length'] = String(size);
  }
  const status = range ? 206 : 200;
  const sendFile = c.get('sendFile');
  if (method === 'GET' && file && sendFile) {
    const sent = await sendFile(c, file, status, headers);
    if (sent) {
      await body?.cancel();
      return sent;
    }
  }
  return new Response(method === 'HEAD' ? null : body, { status, headers });
}
