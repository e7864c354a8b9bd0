// `pullthrough warm <image>… [--platform os/arch]… [--extract] [--wait] [--timeout S]
// [--from-file FILE]`: asks the server to warm images (`POST /api/warm`); with --wait,
// follows the run's events until every image is stored (and extracted) or failed.
import { readFile } from 'node:fs/promises';
import { describeErrorBody, formatBytes, type WireWarmStatus } from '../functions/wire.ts';

export interface WarmOptions {
  server: string;
  images: string[];
  platforms: string[];
  extract: boolean;
  wait: boolean;
  /** Seconds to wait at most (with `wait`). */
  timeoutSeconds?: number | undefined;
  headers: Record<string, string>;
  out: NodeJS.WriteStream;
}

/** References in a file: one per line; blank lines and `#` comments (whole-line or trailing) skipped. */
export async function referencesIn(path: string): Promise<string[]> {
  return (await readFile(path, 'utf8'))
    .split('\n')
    .map((line) => line.replace(/(^|\s)#.*$/, '').trim())
    .filter(Boolean);
}

type Image = WireWarmStatus['images'][number];
const label = (i: Image) => `${i.reference}${i.platform ? ` (${i.platform})` : ''}`;
const progressOf = (i: Image) => {
  const layers = i.layers ? `, layers ${i.layers.filter((l) => l.state === 'ready').length}/${i.layers.length} extracted` : '';
  return `${formatBytes(i.bytes_done)}/${formatBytes(i.bytes_total)}, blobs ${i.blobs.filter((b) => b.state === 'stored').length}/${i.blobs.length}${layers}`;
};

/** Draws the run: bars redrawn in place on a terminal, a line per image change otherwise. */
function display(out: NodeJS.WriteStream) {
  let drawn = 0;
  const said = new Map<string, string>();
  return (status: WireWarmStatus) => {
    if (out.isTTY) {
      const width = 24;
      const lines = status.images.map((i) => {
        const done = i.bytes_total > 0 ? Math.min(1, i.bytes_done / i.bytes_total) : i.state === 'done' ? 1 : 0;
        return `${label(i).padEnd(40)} [${'#'.repeat(Math.round(done * width)).padEnd(width, '-')}] ${progressOf(i)} ${i.state}`;
      });
      out.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((l) => `\x1b[2K${l}\n`).join('')}`);
      drawn = lines.length;
      return;
    }
    // Plain output: a line per image when its state or its count of stored blobs (or extracted layers) changes.
    for (const i of status.images) {
      const key = `${i.reference} ${i.platform ?? ''}`;
      const progress = `${i.state} ${i.blobs.filter((b) => b.state === 'stored').length} ${(i.layers ?? []).filter((l) => l.state === 'ready').length}`;
      if (said.get(key) === progress) continue;
      said.set(key, progress);
      out.write(`${label(i)}: ${i.state}${i.state === 'resolving' ? '' : `, ${progressOf(i)}`}\n`);
    }
  };
}

/** What failed, one line each: the image's error, or its blobs' and layers'. */
export function failures(status: WireWarmStatus): string[] {
  const lines: string[] = [];
  for (const i of status.images) {
    if (i.error) lines.push(`${label(i)}: ${i.error.code}: ${i.error.message}`);
    for (const b of i.blobs) if (b.state === 'failed') lines.push(`${label(i)}: blob ${b.digest}: ${b.error ?? 'failed'}`);
    for (const l of i.layers ?? []) if (l.state === 'failed') lines.push(`${label(i)}: layer ${l.diff_id}: ${l.error ?? 'failed'}`);
  }
  return lines;
}

/** Reads server-sent events from a response: each event's name and data. */
async function* events(res: Response, signal: AbortSignal): AsyncGenerator<{ event: string; data: string }> {
  const decoder = new TextDecoder();
  let buffered = '';
  const reader = res.body!.getReader();
  signal.addEventListener('abort', () => void reader.cancel().catch(() => {}), { once: true });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end: number;
    while ((end = buffered.indexOf('\n\n')) !== -1) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      let event = 'message';
      const data: string[] = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      yield { event, data: data.join('\n') };
    }
  }
}

/** Runs it; the exit status: 0 stored (started, without --wait), 1 failed, refused or timed out. */
export async function warmCommand(options: WarmOptions): Promise<number> {
  const { server, headers, out } = options;
  const res = await fetch(new URL('/api/warm', server), {
    method: 'POST',
    headers: { ...headers, 'content-type': 'application/json' },
    body: JSON.stringify({ images: options.images, ...(options.platforms.length > 0 ? { platforms: options.platforms } : {}), extract: options.extract }),
  });
  const text = await res.text();
  if (res.status !== 202) {
    const detail = describeErrorBody(text);
    console.error(`pullthrough warm: the server refused (${res.status}): ${detail}`);
    return 1;
  }
  const started = JSON.parse(text) as { id: string; status_url: string; events_url: string };
  if (!options.wait) {
    console.log(`warm-up ${started.id} started; follow it with: curl -N ${new URL(`/api/warm/${started.id}/events`, server).href}`);
    return 0;
  }
  const timeout = AbortSignal.timeout((options.timeoutSeconds ?? 3600) * 1000);
  const show = display(out);
  let last: WireWarmStatus | undefined;
  try {
    // The stream may end early (a restart, a proxy's idle timeout): reconnect; it starts with the state now.
    while (!timeout.aborted) {
      const stream = await fetch(new URL(`/api/warm/${started.id}/events`, server), { headers: { ...headers, accept: 'text/event-stream' }, signal: timeout });
      if (!stream.ok) throw new Error(`the server answered ${stream.status} for the warm-up's events`);
      for await (const e of events(stream, timeout)) {
        if (e.event === 'progress') show((last = JSON.parse(e.data) as WireWarmStatus));
        if (e.event === 'end') return report(last);
      }
    }
  } catch (e) {
    if (!timeout.aborted) throw e;
  }
  const pending = (last?.images ?? []).filter((i) => i.state !== 'done').map((i) => `${label(i)}: ${i.state}`);
  console.error(`pullthrough warm: not done after ${options.timeoutSeconds} s${pending.length ? `; still waiting for:\n  ${pending.join('\n  ')}` : ''}`);
  return 1;
}

function report(status: WireWarmStatus | undefined): number {
  if (!status) return 1;
  if (status.state === 'done') {
    console.log(`warm: ${status.images.length} images stored${status.extract ? ' and extracted' : ''} (${formatBytes(status.bytes_total)})`);
    return 0;
  }
  console.error(`pullthrough warm: failed:\n  ${failures(status).join('\n  ')}`);
  return 1;
}
