// /metrics scraped by a real Prometheus (Debian's package) after a scripted sequence of
// pulls through the server process: the counters and gauges it stores are the ones the
// sequence implies.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, freePort, type Registry } from '../setup/registry.ts';
import { pushImage, type BuiltImage } from '../setup/images.ts';
import { startServer, type Server } from '../setup/server.ts';
import { stopProcess, until } from '../setup/process.ts';
import { MANIFEST_MEDIA_TYPES } from '../../core/oci/manifest.ts';

let dir: string;
let registry: Registry;
let server: Server;
let image: BuiltImage;
let prometheus: ChildProcess | undefined;
let promUrl: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-metrics-'));
  registry = await startRegistry();
  image = await pushImage(registry, 'library/metered', '1', [{ 'etc/metered': 'x'.repeat(100_000) }]);
  server = await startServer({ DATA_DIR: join(dir, 'data'), UPSTREAMS: JSON.stringify({ 'docker.io': { url: registry.url } }) });
});
after(async () => {
  if (prometheus) await stopProcess(prometheus);
  await server?.stop();
  await registry?.stop();
  await rm(dir, { recursive: true, force: true });
});

const accept = { accept: MANIFEST_MEDIA_TYPES.join(', ') };
const blobs = () => [image.configDigest, ...image.layers.map((l) => l.digest)];

/** The one value of an instant query, or undefined while Prometheus has none. */
async function value(query: string): Promise<number | undefined> {
  const res = await fetch(`${promUrl}/api/v1/query?${new URLSearchParams({ query })}`);
  const body = (await res.json()) as { status: string; data: { result: Array<{ value: [number, string] }> } };
  assert.equal(body.status, 'success', query);
  return body.data.result.length === 1 ? Number(body.data.result[0]!.value[1]) : undefined;
}

test('Prometheus scrapes /metrics: cache hits and misses, bytes by source, upstream statuses, stored bytes and jobs equal what a scripted sequence implies', async () => {
  const sizes = new Map<string, number>();
  // Each blob: a GET before any manifest (no row: passed through from the upstream, an
  // ingest job stores it), then, once stored, a GET from the store.
  for (const digest of blobs()) {
    const res = await fetch(`${server.url}/v2/library/metered/blobs/${digest}`);
    assert.equal(res.status, 200);
    sizes.set(digest, (await res.arrayBuffer()).byteLength);
  }
  const total = [...sizes.values()].reduce((a, b) => a + b, 0);
  const scrape = async () => (await fetch(`${server.url}/metrics`)).text();
  await until(async () => /^pullthrough_stored_objects\{kind="blob"\} 2$/m.test(await scrape()), 30_000, 'both blobs stored');
  for (const digest of blobs()) assert.equal((await (await fetch(`${server.url}/v2/library/metered/blobs/${digest}`)).arrayBuffer()).byteLength, sizes.get(digest));
  // The manifest: fetched, then from the store (its tag within TAG_TTL_SECONDS).
  for (let i = 0; i < 2; i++) assert.equal((await fetch(`${server.url}/v2/library/metered/manifests/1`, { headers: accept })).status, 200);
  assert.equal((await fetch(`${server.url}/v2/library/nothere/manifests/1`, { headers: accept })).status, 404);
  await until(async () => /^pullthrough_jobs\{kind="ingest",state="done"\} 2$/m.test(await scrape()), 30_000, 'both ingest jobs done');

  const port = await freePort();
  promUrl = `http://127.0.0.1:${port}`;
  await writeFile(
    join(dir, 'prometheus.yml'),
    ['global:', '  scrape_interval: 1s', 'scrape_configs:', '  - job_name: pullthrough', '    static_configs:', `      - targets: ['${server.host}']`, ''].join('\n'),
  );
  prometheus = spawn('prometheus', [`--config.file=${join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
  await until(async () => (await fetch(`${promUrl}/-/ready`).then((r) => r.status, () => 0)) === 200, 60_000, 'Prometheus ready');
  await until(async () => (await value('up{job="pullthrough"}')) === 1 && (await value('pullthrough_stored_bytes{kind="blob"}')) !== undefined, 60_000, 'a scrape of /metrics');

  const expect = async (query: string, expected: number) => assert.equal(await value(query), expected, query);
  await expect('pullthrough_cache_requests_total{kind="blob",result="miss"}', 2);
  await expect('pullthrough_cache_requests_total{kind="blob",result="hit"}', 2);
  await expect('pullthrough_cache_requests_total{kind="manifest",result="miss"}', 1);
  await expect('pullthrough_cache_requests_total{kind="manifest",result="hit"}', 1);
  await expect('pullthrough_served_bytes_total{source="upstream"}', total);
  await expect('pullthrough_served_bytes_total{source="store"}', total);
  // Upstream: two blob GETs passed through, two by the ingest jobs, the tag's HEAD and the manifest's GET; one 404.
  await expect('pullthrough_upstream_requests_total{host="docker.io",status="200"}', 6);
  await expect('pullthrough_upstream_requests_total{host="docker.io",status="404"}', 1);
  await expect('sum(pullthrough_requests_total{route=~".*/blobs/.*",status="200"})', 4);
  await expect('sum(pullthrough_requests_total{route=~".*/manifests/.*",status="404"})', 1);
  await expect('pullthrough_stored_bytes{kind="blob"}', total);
  await expect('pullthrough_stored_objects{kind="blob"}', 2);
  await expect('pullthrough_transfers_in_flight', 0);
  await expect('pullthrough_jobs{kind="ingest",state="done"}', 2);
  await expect('sum(pullthrough_job_duration_seconds_count{kind="ingest"})', 2);
});
