// The status page at `/`, rendered by the server process and read in Debian's Chromium
// (playwright-core), `GET /api/status` and `pullthrough status`, after a known sequence of
// pulls: the numbers shown are the ones the sequence implies. A second upstream goes
// through a faulty proxy so that the page has a 429 and a failed blob to show. With
// STATUS_SCREENSHOT=<file> the test also saves the admin's view there (the README's).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium, type Browser } from 'playwright-core';
import { startRegistry, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { startFaultyProxy, type FaultyProxy } from '../setup/faulty-proxy.ts';
import { until } from '../setup/process.ts';
import { hashPassword } from '../../core/auth/password.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';
import { buildCli } from '../../scripts/build.ts';
import type { WireStatus } from '../../functions/wire.ts';

const password = 'status-admin-pass';
let dir: string;
let registry: Registry;
let proxy: FaultyProxy;
let server: Server;
let browser: Browser | undefined;
let shown: BuiltImage;
let broken: BuiltImage;
const sizes = new Map<string, number>();
let total = 0;

const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const admin = { authorization: `Basic ${Buffer.from(`op:${password}`).toString('base64')}` };
const blobsOf = (image: BuiltImage) => [image.configDigest, ...image.layers.map((l) => l.digest)];
const statusOf = async (headers: Record<string, string> = {}) => (await (await fetch(`${server.url}/api/status`, { headers })).json()) as WireStatus;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-status-'));
  registry = await startRegistry();
  shown = await pushImage(registry, 'library/shown', '1', [{ 'etc/shown': randomBytes(300_000) }, { 'usr/share/shown': randomBytes(40_000) }]);
  broken = await pushImage(registry, 'library/broken', '1', [{ 'etc/broken': 'z'.repeat(10_000) }]);
  proxy = await startFaultyProxy(registry.url);
  server = await startServer({
    DATA_DIR: join(dir, 'data'),
    UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url }, 'ghcr.io': { url: proxy.url } }),
    AUTH_USERS: JSON.stringify({ op: await hashPassword(password) }),
    AUTH_RULES: 'admin to op; pull docker.io/** to anonymous; pull ghcr.io/** to anonymous',
    CACHE_MAX_BYTES: '1000000000',
    INGEST_MAX_ATTEMPTS: '1',
    PULL_FLUSH_SECONDS: '1',
  });

  // docker.io: each blob fetched before any manifest (a miss, passed through; an ingest job
  // stores it), then from the store (a hit); the manifest once fetched (a miss), once from
  // the store (a hit: its tag within TAG_TTL_SECONDS).
  for (const digest of blobsOf(shown)) {
    const res = await fetch(`${server.url}/v2/library/shown/blobs/${digest}`);
    assert.equal(res.status, 200);
    sizes.set(digest, (await res.arrayBuffer()).byteLength);
  }
  total = [...sizes.values()].reduce((a, b) => a + b, 0);
  await until(async () => (await statusOf()).stored.blobs === sizes.size, 30_000, 'the blobs stored');
  for (const digest of blobsOf(shown)) assert.equal((await (await fetch(`${server.url}/v2/library/shown/blobs/${digest}`)).arrayBuffer()).byteLength, sizes.get(digest));
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${server.url}/v2/library/shown/manifests/1`, { headers: accept })).status, 200);

  // ghcr.io: the manifest fetched (a miss) while the proxy corrupts blobs, so its blobs' ingest
  // fails (one attempt); then a manifest refused with 429.
  proxy.fault = 'corrupt';
  assert.equal((await fetch(`${server.url}/v2/ghcr.io/library/broken/manifests/1`, { headers: accept })).status, 200);
  await until(async () => ((await statusOf(admin)).failures ?? []).length === blobsOf(broken).length, 30_000, 'the broken blobs failed');
  proxy.fault = 'ratelimit';
  assert.equal((await fetch(`${server.url}/v2/ghcr.io/library/shown/manifests/1`, { headers: accept })).status, 429);
});
after(async () => {
  await browser?.close();
  await server?.stop();
  await proxy?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

// Hits: a blob GET each from the store, one manifest. Misses: a blob GET each passed through, two manifests.
const expectedHits = () => sizes.size + 1;
const expectedMisses = () => sizes.size + 2;

test('GET /api/status: hits, misses, bytes saved and from upstreams, stored bytes against the cap equal what the sequence implies; details only for the admin', async () => {
  const anonymous = await statusOf();
  for (const w of [anonymous.hour, anonymous.day]) {
    assert.equal(w.hits, expectedHits());
    assert.equal(w.misses, expectedMisses());
    assert.deepEqual(w.by_kind, { manifest: { hits: 1, misses: 2 }, blob: { hits: sizes.size, misses: sizes.size }, layer: { hits: 0, misses: 0 } });
    assert.equal(w.bytes_saved, total);
    assert.equal(w.bytes_from_upstream, total);
    assert.ok(w.too_many_requests >= 1, 'the 429 counted');
  }
  assert.equal(anonymous.hour.hit_ratio, expectedHits() / (expectedHits() + expectedMisses()));
  assert.deepEqual({ ...anonymous.stored }, { bytes: total, blob_bytes: total, layer_bytes: 0, blobs: sizes.size, layers: 0, cap_bytes: 1_000_000_000, low_water_bytes: 900_000_000 });
  assert.equal(anonymous.series.length, 24);
  // The sequence took less than an hour, so it is in the last two points (two if an hour began during it).
  const lastTwo = anonymous.series.slice(-2);
  assert.equal(lastTwo.reduce((n, p) => n + p.hits, 0), expectedHits(), 'this hour is the last point');
  assert.equal(lastTwo.reduce((n, p) => n + p.misses, 0), expectedMisses());
  assert.equal(anonymous.upstreams, undefined, 'no details for anonymous');
  assert.equal(anonymous.repositories, undefined);
  assert.equal(anonymous.failures, undefined);

  const detailed = await statusOf(admin);
  const docker = detailed.upstreams!.find((u) => u.host === 'docker.io')!;
  const ghcr = detailed.upstreams!.find((u) => u.host === 'ghcr.io')!;
  assert.ok(docker.last_success_at && Date.parse(docker.last_success_at) > Date.now() - 600_000);
  assert.equal(docker.last_error_at, null);
  assert.equal(ghcr.last_error, 'HTTP 429');
  assert.ok(ghcr.day.too_many_requests >= 1);
  assert.deepEqual(
    detailed.repositories!.map((r) => [`${r.upstream}/${r.name}`, r.pulls, r.bytes]),
    [
      ['docker.io/library/shown', 2, total],
      ['ghcr.io/library/broken', 1, 0],
    ],
  );
  assert.deepEqual(new Set(detailed.failures!.map((f) => f.id)), new Set(blobsOf(broken)));
  for (const f of detailed.failures!) {
    assert.equal(f.source, 'ghcr.io/library/broken');
    assert.match(f.error, /digest/i);
  }
});

test('the status page in Chromium: the numbers of the sequence, a chart of 24 hours, details after signing in as the admin', async () => {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
  const text = async (page: import('playwright-core').Page, stat: string) => (await page.locator(`[data-stat="${stat}"]`).first().textContent())?.trim();

  const anonymous = await browser.newContext();
  const page = await anonymous.newPage();
  const res = await page.goto(server.url + '/');
  assert.equal(res?.status(), 200);
  assert.equal(await page.title(), 'pullthrough status');
  assert.equal(await text(page, 'hour-hits'), String(expectedHits()));
  assert.equal(await text(page, 'hour-misses'), String(expectedMisses()));
  assert.equal(await text(page, 'day-hits'), String(expectedHits()));
  assert.equal(await text(page, 'hour-hit-ratio'), `${((expectedHits() / (expectedHits() + expectedMisses())) * 100).toFixed(1)}%`);
  assert.equal(await page.locator('[data-stat="stored-bytes"]').getAttribute('data-bytes'), String(total));
  assert.equal(await page.locator('[data-stat="hour-bytes-saved"]').getAttribute('data-bytes'), String(total));
  assert.equal(await text(page, 'blobs'), String(sizes.size));
  assert.equal(await page.locator('svg.chart > g').count(), 24, 'one bar per hour');
  // The last two bars hold the sequence (both when an hour began during it or since).
  const bars = page.locator('svg.chart > g');
  const lastTwo = [bars.nth(22), bars.nth(23)];
  const counts = await Promise.all(lastTwo.map(async (bar) => /(\d+) hits, (\d+) misses/.exec((await bar.locator('title').textContent()) ?? '')!.slice(1).map(Number)));
  assert.deepEqual([counts[0]![0]! + counts[1]![0]!, counts[0]![1]! + counts[1]![1]!], [expectedHits(), expectedMisses()]);
  const drawn = await Promise.all(lastTwo.map(async (bar, i) => counts[i]![0]! === 0 || Number(await bar.locator('rect.hit').getAttribute('height')) > 0));
  assert.deepEqual(drawn, [true, true], 'a bar with hits has its hits drawn');
  assert.equal(await page.locator('table').count(), 0, 'no details for anonymous');
  assert.equal(await page.locator('[data-sign-in]').count(), 1);
  // The sign-in link answers 401 with a Basic challenge, so that a browser asks for credentials.
  const challenge = await fetch(server.url + '/?details=1');
  assert.equal(challenge.status, 401);
  assert.match(challenge.headers.get('www-authenticate') ?? '', /^Basic realm="pullthrough"/);

  const signedIn = await browser.newContext({ httpCredentials: { username: 'op', password }, viewport: { width: 1100, height: 900 } });
  const adminPage = await signedIn.newPage();
  assert.equal((await adminPage.goto(server.url + '/?details=1'))?.status(), 200);
  assert.equal(await adminPage.locator('[data-sign-in]').count(), 0);
  assert.match((await adminPage.locator('tr[data-host="ghcr.io"]').textContent()) ?? '', /HTTP 429/);
  assert.match((await adminPage.locator('tr[data-host="docker.io"]').textContent()) ?? '', /none/);
  assert.equal(await adminPage.locator('tr[data-repository="docker.io/library/shown"] [data-stat="pulls"]').textContent(), '2');
  assert.equal(await adminPage.locator('table[data-table="failures"] tbody tr').count(), blobsOf(broken).length);
  if (process.env.STATUS_SCREENSHOT) await adminPage.screenshot({ path: process.env.STATUS_SCREENSHOT, fullPage: true });
});

test('`pullthrough status` prints the same summary; the details with admin credentials', async () => {
  const cli = await buildCli();
  const run = (env: Record<string, string>) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [cli, 'status', '--server', server.url], { env: { ...process.env, ...env } }, (error, stdout, stderr) =>
        resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }),
      ),
    );
  const plain = await run({});
  assert.equal(plain.code, 0, plain.stderr);
  assert.match(plain.stdout, new RegExp(`last hour   hit ratio [0-9.]+% \\(${expectedHits()} hits, ${expectedMisses()} misses\\)`));
  assert.match(plain.stdout, new RegExp(`stored      \\S+ \\S+ of 1\\.0 GB .*: ${sizes.size} blobs`));
  assert.match(plain.stdout, /need the admin grant/);
  const detailed = await run({ PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: password });
  assert.equal(detailed.code, 0, detailed.stderr);
  assert.match(detailed.stdout, /docker\.io\/library\/shown: 2 manifest pulls/);
  assert.match(detailed.stdout, /ghcr\.io: .*last error HTTP 429/);
  assert.match(detailed.stdout, new RegExp(`blob ${blobsOf(broken)[0]} \\(ghcr\\.io/library/broken`));
  const refused = await run({ PULLTHROUGH_USER: 'op', PULLTHROUGH_PASSWORD: 'wrong' });
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /401/);
});
