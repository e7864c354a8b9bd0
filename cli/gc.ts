// `pullthrough gc [--dry-run]`: asks the server for one garbage-collection run
// (`POST /api/gc`, the admin grant) and prints what it removed, or would remove, and what
// that frees.
import { describeErrorBody, formatBytes, type WireGcReport } from '../functions/wire.ts';

/** The report as lines: one per kind, then each thing named. */
export function formatGcReport(report: WireGcReport): string[] {
  if (!report.ran) return ['another garbage collection is running; nothing was done'];
  const verb = report.dry_run ? 'would remove' : 'removed';
  const kinds = Object.entries(report.totals);
  const freed = kinds.reduce((n, [, t]) => n + t.bytes, 0);
  const lines = kinds.map(([kind, t]) => `${verb} ${t.count} ${kind} (${formatBytes(t.bytes)})`);
  if (report.done_jobs > 0) lines.push(`${verb} ${report.done_jobs} done jobs`);
  if (lines.length === 0) lines.push(`nothing to remove`);
  else lines.push(`${report.dry_run ? 'would free' : 'freed'} ${formatBytes(freed)}`);
  for (const item of report.items) lines.push(`  ${item.kind} ${item.key} ${item.bytes}`);
  const named = report.items.length;
  const counted = kinds.reduce((n, [, t]) => n + t.count, 0);
  if (counted > named) lines.push(`  … and ${counted - named} more`);
  return lines;
}

/** Runs it; the exit status: 0 done, 1 refused or failed. */
export async function gcCommand(server: string, dryRun: boolean, headers: Record<string, string>): Promise<number> {
  const url = new URL('/api/gc', server);
  if (dryRun) url.searchParams.set('dry_run', 'true');
  const res = await fetch(url, { method: 'POST', headers });
  const text = await res.text();
  if (!res.ok) {
    const detail = describeErrorBody(text);
    console.error(`pullthrough gc: the server refused (${res.status}): ${detail}`);
    return 1;
  }
  for (const line of formatGcReport(JSON.parse(text) as WireGcReport)) console.log(line);
  return 0;
}
