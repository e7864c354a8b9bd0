// A real HTTP hop in front of the test registry that misbehaves on blob bodies the way
// broken upstreams do: it flips a byte ("corrupt"), drops the connection halfway ("cut"),
// trickles the body ("slow", about 10 MB/s), or sends half and then holds the connection
// open ("stall"), so a test can act while a download runs; "slowall" trickles every
// successful response body, whatever the path (in front of an S3 endpoint). It can also
// answer every request with 429 and Retry-After: 7 ("ratelimit", as Docker Hub does), or
// serve any manifest GET as a 5 MiB document ("hugemanifest").
import { createServer, request, type Server } from 'node:http';

export type Fault = 'none' | 'corrupt' | 'cut' | 'slow' | 'slowall' | 'stall' | 'ratelimit' | 'hugemanifest';

export const HUGE_MANIFEST_BYTES = 5 * 1024 * 1024;

export async function startFaultyProxy(target: string): Promise<{ url: string; fault: Fault; stop(): Promise<void> }> {
  const upstream = new URL(target);
  const state = { url: '', fault: 'none' as Fault, stop: async () => {} };
  const server: Server = createServer((req, res) => {
    if (state.fault === 'ratelimit') {
      res.writeHead(429, { 'retry-after': '7', 'content-type': 'application/json' });
      return res.end(JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'pull rate limit', detail: null }] }));
    }
    if (state.fault === 'hugemanifest' && req.method === 'GET' && /\/manifests\//.test(req.url ?? '')) {
      const body = Buffer.alloc(HUGE_MANIFEST_BYTES, ' ');
      body.write('{"schemaVersion":2,"manifests":[]}');
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.index.v1+json', 'content-length': String(body.length) });
      return res.end(body);
    }
    const isBlob = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    const out = request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      const faulted = state.fault === 'slowall' ? (up.statusCode ?? 500) < 300 : isBlob && state.fault !== 'none' && up.statusCode === 200;
      if (!faulted) return up.pipe(res);
      const total = Number(up.headers['content-length'] ?? 0);
      let seen = 0;
      res.on('close', () => up.destroy());
      up.on('data', (chunk: Buffer) => {
        if (state.fault === 'stall' && seen + chunk.length >= total / 2) return up.pause();
        if (state.fault === 'cut' && seen + chunk.length >= total / 2) {
          res.destroy();
          up.destroy();
          return;
        }
        if (state.fault === 'corrupt' && seen === 0) chunk[0]! ^= 0xff;
        seen += chunk.length;
        res.write(chunk);
        if (state.fault === 'slow' || state.fault === 'slowall') {
          up.pause();
          setTimeout(() => up.resume(), Math.ceil(chunk.length / 10_000));
        }
      });
      up.on('end', () => res.end());
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  state.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  state.stop = () => new Promise<void>((r) => server.close(() => r()));
  return state;
}
