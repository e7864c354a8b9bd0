// A real HTTP hop in front of the test registry that misbehaves on blob bodies the way
// broken upstreams do: it flips a byte ("corrupt"), drops the connection halfway ("cut"),
// trickles the body ("slow", about 10 MB/s), or sends half and then holds the connection
// open ("stall"), so a test can act while a download runs; "slowall" trickles every
// successful response body, whatever the path (in front of an S3 endpoint). It can also
// answer every request with 429 and Retry-After: 7 ("ratelimit", as Docker Hub does), or
// serve any manifest GET as a 5 MiB document ("hugemanifest"). Independently of the fault,
// `cuts` drops a blob body's connection when it reaches each of those fractions of the
// blob (once each, whether the body started at 0 or at a Range's offset; with `cutsOnly`, only
// the bodies of that digest, so that a blob the queue fetches meanwhile is not cut instead), `ignoreRange`
// strips Range headers from blob requests (an upstream that does not do ranges), and
// `changeEtag` answers Range requests with another ETag (the object changed), and
// `blobBytes` / `blobRanges` count the blob body bytes sent and the Range asked per GET.
import { createServer, request, type Server } from 'node:http';

export type Fault = 'none' | 'corrupt' | 'cut' | 'slow' | 'slowall' | 'stall' | 'ratelimit' | 'hugemanifest';

export const HUGE_MANIFEST_BYTES = 5 * 1024 * 1024;

export interface FaultyProxy {
  url: string;
  fault: Fault;
  cuts: number[];
  /** A digest: the cuts apply to its bodies only. */
  cutsOnly?: string | undefined;
  ignoreRange: boolean;
  changeEtag: boolean;
  blobBytes: number;
  blobRanges: Array<string | undefined>;
  stop(): Promise<void>;
}

export async function startFaultyProxy(target: string): Promise<FaultyProxy> {
  const upstream = new URL(target);
  const state: FaultyProxy = { url: '', fault: 'none', cuts: [], ignoreRange: false, changeEtag: false, blobBytes: 0, blobRanges: [], stop: async () => {} };
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
    const headers = { ...req.headers };
    if (isBlob) {
      state.blobRanges.push(req.headers.range);
      if (state.ignoreRange) delete headers.range;
    }
    const out = request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers }, (up) => {
      if (isBlob && state.changeEtag && up.statusCode === 206) up.headers.etag = '"changed"';
      res.writeHead(up.statusCode ?? 502, up.headers);
      const ok = up.statusCode === 200 || up.statusCode === 206;
      const faulted = state.fault === 'slowall' ? (up.statusCode ?? 500) < 300 : isBlob && ok && (state.fault !== 'none' || state.cuts.length > 0);
      if (!faulted) {
        if (isBlob && ok) up.on('data', (chunk: Buffer) => (state.blobBytes += chunk.length));
        return up.pipe(res);
      }
      const range = /^bytes (\d+)-\d+\/(\d+)$/.exec(String(up.headers['content-range'] ?? ''));
      const start = range ? Number(range[1]) : 0;
      const total = range ? Number(range[2]) : Number(up.headers['content-length'] ?? 0);
      let seen = 0;
      res.on('close', () => up.destroy());
      up.on('data', (chunk: Buffer) => {
        // Half-way through the blob (a body resumed past it goes through; a resumed one is never stalled).
        const half = start + seen < total / 2 && start + seen + chunk.length >= total / 2;
        if (state.fault === 'stall' && half && start === 0) return up.pause();
        if (state.fault === 'cut' && half) {
          res.destroy();
          up.destroy();
          return;
        }
        const cuttable = !state.cutsOnly || (req.url ?? '').endsWith(`/blobs/${state.cutsOnly}`);
        const cut = cuttable ? state.cuts.findIndex((f) => f * total > start + seen && f * total <= start + seen + chunk.length) : -1;
        if (cut >= 0) {
          const keep = Math.floor(state.cuts[cut]! * total) - (start + seen);
          state.cuts.splice(cut, 1);
          state.blobBytes += keep;
          res.write(chunk.subarray(0, keep), () => (res.destroy(), up.destroy()));
          return;
        }
        if (state.fault === 'corrupt' && seen === 0) chunk[0]! ^= 0xff;
        seen += chunk.length;
        if (isBlob) state.blobBytes += chunk.length;
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
