// Warm answers given again before the app (functions/replay.ts, workers/node.ts), on the
// server as `npm start` runs it: byte for byte what the app answered, logged and counted
// as the app counts them, for the credentials they were answered for only, and never
// after what they were made from stops holding: a token's expiry, a tag's TTL, a blob
// this process evicts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { openDatabase } from '../../core/adapters/libsql.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { signToken } from '../../core/auth/token.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { basic, startServer, type Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';

const TAG_TTL_SECONDS = 2;
const MEMORY_CACHE_TTL_SECONDS = 10;
const ACCEPT = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const OP = basic('op', 'op-pass');
const ALICE = basic('alice', 'alice-pass');
const KEY_SECRET = randomBytes(32);
const MANIFEST_ROUTE = '/v2/:name{.+}/manifests/:reference';
const BLOB_ROUTE = '/v2/:name{.+}/blobs/:digest';

let registry: Registry;
let dir: string;
let server: Server;
let image: BuiltImage;
let team: BuiltImage;

before(async () => {
  registry = await startRegistry();
  image = await pushImage(registry, 'library/kept', 'v1', [{ 'etc/kept': randomBytes(200_000) }]);
  team = await pushImage(registry, 'team/app', '1', [{ 'etc/app': 'app\n' }]);
  dir = await mkdtemp(join(tmpdir(), 'pt-replay-'));
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }),
    TAG_TTL_SECONDS: String(TAG_TTL_SECONDS),
    MEMORY_CACHE_TTL_SECONDS: String(MEMORY_CACHE_TTL_SECONDS),
    PULL_FLUSH_SECONDS: '1',
    GC_INTERVAL_SECONDS: '0',
    CACHE_MAX_BYTES: '1',
    AUTH_USERS: JSON.stringify({ op: await hashPassword('op-pass'), alice: await hashPassword('alice-pass') }),
    AUTH_TOKEN_KEYS: `k1:${KEY_SECRET.toString('base64url')}`,
    AUTH_RULES: 'pull docker.io/library/* to anonymous; pull docker.io/team/* to alice; admin to op',
  });
});
after(async () => {
  await server?.stop();
  await registry?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Logged {
  method: string;
  path: string;
  status: number;
  replayed?: boolean;
}

/** The access log lines so far for `method` and `path`. */
const logged = (method: string, path: string): Logged[] =>
  server
    .output()
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes('"msg":"request"'))
    .map((line) => JSON.parse(line) as Logged & { msg: string })
    .filter((l) => l.method === method && l.path === path);

/** What a client sees of an answer: status, headers (not the connection's own), body. */
interface Seen {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** A request, and the access log line it made (waited for: the log is written after the answer). */
async function ask(method: 'GET' | 'HEAD', path: string, headers: Record<string, string> = {}): Promise<{ seen: Seen; line: Logged }> {
  const before = logged(method, path).length;
  const res = await fetch(`${server.url}${path}`, { method, headers });
  const body = Buffer.from(await res.arrayBuffer()).toString('base64');
  const kept = Object.fromEntries([...res.headers].filter(([name]) => !['date', 'connection', 'keep-alive'].includes(name)));
  await until(async () => logged(method, path).length > before, 10_000, `the log line of ${method} ${path}`);
  return { seen: { status: res.status, headers: kept, body }, line: logged(method, path)[before]! };
}

/** Asks until an answer is given again (at most `tries` times); every answer seen. */
async function askUntilReplayed(method: 'GET' | 'HEAD', path: string, headers: Record<string, string> = {}, tries = 4): Promise<Array<{ seen: Seen; line: Logged }>> {
  const answers = [];
  for (let i = 0; i < tries; i++) {
    answers.push(await ask(method, path, headers));
    if (answers.at(-1)!.line.replayed) return answers;
  }
  assert.fail(`${method} ${path} was not answered again in ${tries} tries: ${JSON.stringify(answers.map((a) => a.line))}`);
}

/** The value of one counter series on /metrics (0 when absent; labels in the exposition's order). */
async function counter(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`, { headers: OP })).text();
  const series = `${name}{${Object.entries(labels)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}="${v}"`)
    .join(',')}}`;
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

test('a warm manifest by tag and by digest, and a blob HEAD, are given again byte for byte as the app gave them, logged, counted and pulled the same', async () => {
  const byTag = '/v2/library/kept/manifests/v1';
  const byDigest = `/v2/library/kept/manifests/${image.manifestDigest}`;
  const blob = `/v2/library/kept/blobs/${image.layers[0]!.digest}`;
  // Cold first: the manifest is fetched, its blobs stored; an answer is kept once nothing is left to fetch.
  assert.equal((await ask('GET', byTag, ACCEPT)).seen.status, 200);
  await until(async () => (await ask('GET', byTag, ACCEPT)).line.replayed === true, 30_000, 'the warm manifest answered again');

  const requestsBefore = await counter('pullthrough_requests_total', { route: MANIFEST_ROUTE, method: 'GET', status: '200' });
  const headsBefore = await counter('pullthrough_requests_total', { route: BLOB_ROUTE, method: 'HEAD', status: '200' });
  const hitsBefore = await counter('pullthrough_cache_requests_total', { kind: 'manifest', result: 'hit' });
  let gets = 0;
  let heads = 0;
  for (const [method, path] of [
    ['GET', byTag],
    ['HEAD', byTag],
    ['GET', byDigest],
    ['HEAD', byDigest],
    ['HEAD', blob],
  ] as const) {
    // A fresh key is answered by the app first; the next one is given again.
    const answers = [...(await askUntilReplayed(method, path, ACCEPT)), await ask(method, path, ACCEPT)];
    assert.ok(answers.some((a) => !a.line.replayed) || path === byTag, `${method} ${path}: the app answered first`);
    assert.equal(answers.at(-1)!.line.replayed, true, `${method} ${path}: still given again`);
    for (const a of answers) assert.deepEqual(a.seen, answers[0]!.seen, `${method} ${path}: the same answer every time`);
    assert.equal(answers[0]!.seen.status, 200);
    assert.equal(answers[0]!.seen.headers['docker-content-digest'], path === blob ? image.layers[0]!.digest : image.manifestDigest);
    for (const a of answers) assert.deepEqual({ status: a.line.status, path: a.line.path }, { status: 200, path });
    if (path === blob) heads += answers.length;
    else if (method === 'GET') gets += answers.length;
  }
  assert.equal((await counter('pullthrough_requests_total', { route: MANIFEST_ROUTE, method: 'GET', status: '200' })) - requestsBefore, gets, 'every manifest GET counted under its route');
  assert.equal((await counter('pullthrough_requests_total', { route: BLOB_ROUTE, method: 'HEAD', status: '200' })) - headsBefore, heads, 'every blob HEAD counted');
  assert.equal((await counter('pullthrough_cache_requests_total', { kind: 'manifest', result: 'hit' })) - hitsBefore, gets, 'every manifest GET a hit');

  // Every manifest GET is a pull, given again or not (written in the next batch).
  const getsLogged = logged('GET', byTag).length + logged('GET', byDigest).length;
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const pulls = async () => (await db.all<{ n: number }>(sql`SELECT pull_count AS n FROM manifests WHERE digest = ${image.manifestDigest}`))[0]?.n;
    await until(async () => (await pulls()) === getsLogged, 15_000, `${getsLogged} pulls recorded`);
  } finally {
    close();
  }
});

test('an answer is given again for the credentials it was answered for only, and not once their token expires', async () => {
  const path = '/v2/team/app/manifests/1';
  await until(async () => (await ask('GET', path, { ...ACCEPT, ...ALICE })).line.replayed === true, 30_000, "alice's warm manifest answered again");
  // Other credentials, or none, are answered by the app: as the rules say.
  const anonymous = await ask('GET', path, ACCEPT);
  assert.deepEqual({ status: anonymous.seen.status, replayed: anonymous.line.replayed }, { status: 401, replayed: undefined });
  const op = await ask('GET', path, { ...ACCEPT, ...OP });
  assert.deepEqual({ status: op.seen.status, replayed: op.line.replayed }, { status: 403, replayed: undefined });
  // An empty Authorization header is not none: refused, though anonymous answers are kept.
  await askUntilReplayed('GET', '/v2/library/kept/manifests/v1', ACCEPT);
  const empty = await ask('GET', '/v2/library/kept/manifests/v1', { ...ACCEPT, authorization: '' });
  assert.deepEqual({ status: empty.seen.status, replayed: empty.line.replayed }, { status: 401, replayed: undefined });

  const exp = Math.floor(Date.now() / 1000) + 3;
  const token = await signToken(
    { sub: 'user:alice', aud: 'pullthrough', iat: exp - 3, exp, access: [{ type: 'repository', name: 'docker.io/team/app', actions: ['pull'] }] },
    { id: 'k1', secret: new Uint8Array(KEY_SECRET) },
  );
  const bearer = { ...ACCEPT, authorization: `Bearer ${token}` };
  const answers = await askUntilReplayed('GET', path, bearer);
  assert.equal(answers.at(-1)!.seen.headers['docker-content-digest'], team.manifestDigest);
  // Asked until refused: nothing asked at or after the expiry is answered.
  let refused: { seen: Seen; line: Logged } | undefined;
  await until(
    async () => {
      const asked = Date.now();
      const a = await ask('GET', path, bearer);
      if (asked >= exp * 1000) assert.equal(a.seen.status, 401, 'asked after the expiry');
      if (a.seen.status === 200) return false;
      refused = a;
      return true;
    },
    15_000,
    'the expired token refused',
  );
  assert.equal(refused!.line.replayed, undefined);
  assert.match(refused!.seen.headers['www-authenticate'] ?? '', /error="invalid_token"/);
});

test('a tag past its TTL is resolved again, and a blob this process evicts is asked of the upstream: no answer outlives its facts', async () => {
  const byTag = '/v2/library/kept/manifests/v1';
  const old = await askUntilReplayed('GET', byTag, ACCEPT);
  assert.equal(old.at(-1)!.seen.headers['docker-content-digest'], image.manifestDigest);
  const moved = await pushImage(registry, 'library/kept', 'v1', [{ 'etc/moved': randomBytes(1000) }]);
  await until(async () => (await ask('GET', byTag, ACCEPT)).seen.headers['docker-content-digest'] === moved.manifestDigest, 30_000, 'the moved tag');

  // The blob's HEAD is given again while its ready row is kept; this process's garbage
  // collection drops the row before marking it evicted, and the answer goes with it, well
  // within the row's TTL (the collection waits that long before deleting the object).
  const digest = image.layers[0]!.digest;
  const blob = `/v2/library/kept/blobs/${digest}`;
  const upstreamHeads = async () => (await registry.settledRequests()).filter((r) => r.method === 'HEAD' && r.path.endsWith(`/blobs/${digest}`)).length;
  const { db, close } = await openDatabase(`file:${join(dir, 'data', 'pullthrough.db')}`);
  try {
    const state = async () => (await db.all<{ state: string }>(sql`SELECT state FROM blobs WHERE digest = ${digest}`))[0]?.state;
    await askUntilReplayed('HEAD', blob);
    const kept = Date.now();
    // Not pulled for long: retention (CACHE_MAX_BYTES=1) takes it.
    await db.run(sql`UPDATE blobs SET last_pulled_at = 0, ready_at = 0`);
    const gc = fetch(`${server.url}/api/gc`, { method: 'POST', headers: OP });
    await until(async () => (await state()) === 'evicted', 30_000, 'the row marked evicted');
    const headsBefore = await upstreamHeads();
    const during = await ask('HEAD', blob);
    assert.ok(Date.now() - kept < MEMORY_CACHE_TTL_SECONDS * 1000, 'asked while the answer was in its TTL');
    assert.deepEqual({ status: during.seen.status, replayed: during.line.replayed }, { status: 200, replayed: undefined });
    assert.equal(await upstreamHeads(), headsBefore + 1, 'the upstream was asked: the blob is not stored any more');
    const report = (await (await gc).json()) as { items: Array<{ kind: string; key: string }> };
    assert.ok(report.items.some((i) => i.kind === 'blob' && i.key.endsWith(digest.slice('sha256:'.length))), JSON.stringify(report.items));
  } finally {
    close();
  }
});
