// `pullthrough status`: the status page's summary in the terminal (`GET /api/status`).
import { describeErrorBody, formatBytes, type WireStatus } from '../functions/wire.ts';

const percent = (ratio: number | null) => (ratio === null ? '–' : `${(ratio * 100).toFixed(1)}%`);

/** Sparkline of the hourly hits and misses (oldest first): a terminal's chart. */
function sparkline(values: readonly number[]): string {
  const marks = '▁▂▃▄▅▆▇█';
  const top = Math.max(...values, 0);
  return values.map((v) => (v === 0 ? ' ' : marks[Math.min(marks.length - 1, Math.floor((v / top) * (marks.length - 1)))])).join('');
}

/** The summary as lines. */
export function formatStatus(s: WireStatus): string[] {
  const lines: string[] = [];
  const cap = s.stored.cap_bytes > 0 ? ` of ${formatBytes(s.stored.cap_bytes)} (${percent(s.stored.bytes / s.stored.cap_bytes)})` : ' (no cap)';
  lines.push(`stored      ${formatBytes(s.stored.bytes)}${cap}: ${s.stored.blobs} blobs ${formatBytes(s.stored.blob_bytes)}, ${s.stored.layers} extracted layers ${formatBytes(s.stored.layer_bytes)}`);
  for (const [label, w] of [
    ['last hour', s.hour],
    ['last day ', s.day],
  ] as const) {
    lines.push(
      `${label}   hit ratio ${percent(w.hit_ratio)} (${w.hits} hits, ${w.misses} misses), saved ${formatBytes(w.bytes_saved)}, from upstreams ${formatBytes(w.bytes_from_upstream)}, upstream 429s ${w.too_many_requests}`,
    );
  }
  lines.push(`24 h        hits   |${sparkline(s.series.map((p) => p.hits))}|`);
  lines.push(`            misses |${sparkline(s.series.map((p) => p.misses))}|`);
  lines.push(`in flight   ${s.in_flight.transfers} transfers, ${s.in_flight.extractions} extractions`);
  if (!s.upstreams) {
    lines.push('(upstreams, repositories and failures need the admin grant: set PULLTHROUGH_USER and PULLTHROUGH_PASSWORD, or PULLTHROUGH_TOKEN)');
    return lines;
  }
  lines.push('upstreams');
  for (const u of s.upstreams) {
    const error = u.last_error_at ? `last error ${u.last_error} at ${u.last_error_at}` : 'no error';
    lines.push(`  ${u.host}: last success ${u.last_success_at ?? 'never'}, ${error}; 24 h: ${u.day.requests} requests, ${u.day.errors} errors, ${u.day.too_many_requests} 429s`);
  }
  lines.push('most pulled repositories');
  if ((s.repositories ?? []).length === 0) lines.push('  none yet');
  for (const r of s.repositories ?? []) lines.push(`  ${r.upstream}/${r.name}: ${r.pulls} manifest pulls, ${formatBytes(r.bytes)} stored`);
  lines.push('recent failures');
  if ((s.failures ?? []).length === 0) lines.push('  none');
  for (const f of s.failures ?? []) lines.push(`  ${f.kind} ${f.id} (${f.source}, ${f.attempts} attempts, ${f.at}): ${f.error}`);
  return lines;
}

/** Prints it; the exit status: 0 shown, 1 refused. */
export async function statusCommand(server: string, headers: Record<string, string>): Promise<number> {
  const res = await fetch(new URL('/api/status', server), { headers });
  const text = await res.text();
  if (!res.ok) {
    console.error(`pullthrough status: the server answered ${res.status}: ${describeErrorBody(text)}`);
    return 1;
  }
  for (const line of formatStatus(JSON.parse(text) as WireStatus)) console.log(line);
  return 0;
}
