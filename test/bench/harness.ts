// What every bench shares: a table of results with targets, timing, server measurements,
// and cleanups that run whatever happens.
import { readFile } from 'node:fs/promises';
import type { Server } from '../setup/server.ts';
import { until } from '../setup/process.ts';

const rows: Array<[string, string, string]> = [];

/** Records a result (printed at once to stderr, and in the final table). */
export const report = (what: string, value: string, target = ''): void => {
  rows.push([what, value, target]);
  console.error(`  ${what}: ${value}${target ? `  (${target})` : ''}`);
};

export const MB = 1024 * 1024;

export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Wall-clock seconds of `fn`. */
export const seconds = async (fn: () => Promise<unknown>): Promise<number> => {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
};

/** Run in reverse at the end, whatever happened. */
export const cleanups: Array<() => Promise<unknown>> = [];

/**
 * MB/s of one of the server's jobs, from its completion log line
 * (`{"msg":<kind>,<field>:<value>,…,"bytes","ms"}`); waits for the line.
 */
export async function jobRate(s: Server, kind: string, field: string, value: string, timeoutMs = 10_000): Promise<number> {
  let rate: number | undefined;
  await until(async () => {
    for (const line of s.output().split('\n')) {
      if (!line.startsWith('{')) continue;
      const entry = JSON.parse(line) as Record<string, unknown> & { bytes?: number; ms?: number };
      if (entry.msg === kind && entry[field] === value && entry.bytes && entry.ms) rate = entry.bytes / MB / (entry.ms / 1000);
    }
    return rate !== undefined;
  }, timeoutMs, `the ${kind} log line for ${value}`);
  return rate!;
}

/** The peak resident set of a server process so far (Linux VmHWM), in MB. */
export const hwmOf = async (s: Server): Promise<number> => Number(/VmHWM:\s+(\d+) kB/.exec(await readFile(`/proc/${s.child.pid}/status`, 'utf8'))![1]) / 1024;

/** Runs a bench, prints the table on stdout, and runs the cleanups. */
export async function runBench(main: () => Promise<void>): Promise<void> {
  try {
    await main();
    const width = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
    console.log(`\n${rows.map((r) => r.map((c, i) => c.padEnd(width[i]!)).join(' | ').trimEnd()).join('\n')}`);
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup();
  }
}
