import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PrometheusMetrics } from '../../core/ports/metrics.ts';

test('the exposition: HELP and TYPE once per metric, label values escaped, cumulative histogram buckets, gauges computed at scrape', async () => {
  const m = new PrometheusMetrics();
  m.count('pullthrough_requests_total', { route: '/v2/:name{.+}/blobs/:digest', status: '200' });
  m.count('pullthrough_requests_total', { status: '200', route: '/v2/:name{.+}/blobs/:digest' }, 2);
  m.count('pullthrough_requests_total', { route: 'a"b\\c\nd', status: '404' });
  m.observe('pullthrough_job_duration_seconds', 0.2, { kind: 'ingest' });
  m.observe('pullthrough_job_duration_seconds', 7, { kind: 'ingest' });
  let scraped = 0;
  const text = await m.exposition([async () => [{ name: 'pullthrough_stored_bytes', labels: { kind: 'blob' }, value: ++scraped * 100 }]]);
  const lines = text.trimEnd().split('\n');
  assert.equal(lines.filter((l) => l === '# TYPE pullthrough_requests_total counter').length, 1);
  assert.ok(lines.includes('pullthrough_requests_total{route="/v2/:name{.+}/blobs/:digest",status="200"} 3'), 'label order does not make a second series');
  assert.ok(lines.includes('pullthrough_requests_total{route="a\\"b\\\\c\\nd",status="404"} 1'));
  assert.ok(lines.includes('# TYPE pullthrough_job_duration_seconds histogram'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_bucket{kind="ingest",le="0.1"} 0'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_bucket{kind="ingest",le="0.25"} 1'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_bucket{kind="ingest",le="10"} 2'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_bucket{kind="ingest",le="+Inf"} 2'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_sum{kind="ingest"} 7.2'));
  assert.ok(lines.includes('pullthrough_job_duration_seconds_count{kind="ingest"} 2'));
  assert.ok(lines.includes('# TYPE pullthrough_stored_bytes gauge'));
  assert.ok(lines.includes('pullthrough_stored_bytes{kind="blob"} 100'));
  assert.match(await m.exposition([async () => [{ name: 'pullthrough_stored_bytes', labels: { kind: 'blob' }, value: ++scraped * 100 }]]), /^pullthrough_stored_bytes\{kind="blob"\} 200$/m, 'computed again at each scrape');
});
