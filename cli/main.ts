#!/usr/bin/env node
// `pullthrough rootfs <image> <dir> [--server URL] [--platform os/arch[/variant]] [--concurrency N]`
// builds a root filesystem from a pullthrough server's pre-extracted layers.
import { parseArgs } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { buildRootfs, DEFAULT_CONCURRENCY, type Progress } from './rootfs.ts';
import type { WireLayer as PlannedLayer } from '../functions/wire.ts';
import { errorCodeIn } from '../core/oci/errors.ts';
import { hashPassword } from '../core/auth/password.ts';
import { newStaticToken } from '../core/auth/access.ts';
import { gcCommand } from './gc.ts';
import { statusCommand } from './status.ts';
import { referencesIn, warmCommand } from './warm.ts';
import { exportCommand, importCommand } from './import.ts';
import { credentialHeaders } from './rootfs.ts';

const USAGE = `usage: pullthrough rootfs <image> <dir> [--server URL] [--platform os/arch[/variant]] [--concurrency N]
       pullthrough hash-password   (reads the password from standard input, prints its hash for AUTH_USERS)
       pullthrough new-token       (prints a new CI token, then its hash for AUTH_TOKENS)
       pullthrough gc [--dry-run] [--server URL]   (one garbage collection on the server; admin)
       pullthrough status [--server URL]   (what the server stores, its hit ratio, upstreams and failures)
       pullthrough warm <image>... [--platform os/arch]... [--extract] [--wait] [--timeout SECONDS] [--from-file FILE] [--server URL]
                   (puts images in the cache ahead of their pulls; --wait exits 0 once all are stored, 1 naming what failed)
       pullthrough import <archive.tar|layout-dir> --as <repository>[:<tag>] [--server URL]
                   (an OCI layout or docker save archive into the cache, verified, with no upstream; admin)
       pullthrough export <image> <file.tar> [--platform os/arch] [--server URL]
                   (a cached image as an OCI image layout tar, for an import elsewhere or skopeo's oci-archive:)

  <image>   e.g. alpine:3.20, docker.io/library/alpine@sha256:..., ghcr.io/org/app:1
  <dir>     the root filesystem to build (created; should be empty)
  --server  the pullthrough server (default $PULLTHROUGH_URL or http://127.0.0.1:5000)
  --platform  for multi-platform images (default linux/amd64)
  --concurrency  parallel downloads, each writing its files (default: one per core, 2 to 8)

A mirror with access control takes PULLTHROUGH_TOKEN, or PULLTHROUGH_USER and
PULLTHROUGH_PASSWORD, from the environment.

Exit status: 0 built, 1 failed, 2 usage, 3 built but some entries were rejected as unsafe.`;

const mb = (n: number) => (n / 1e6).toFixed(1);

/** Bars on a terminal (redrawn in place), one line per finished layer otherwise. */
function progressDisplay(stream: NodeJS.WriteStream): Progress {
  let layers: readonly PlannedLayer[] = [];
  const got: number[] = [];
  const state: string[] = [];
  let drawn = 0;
  let last = 0;
  const draw = (force = false) => {
    if (!stream.isTTY) return;
    const now = Date.now();
    if (!force && now - last < 100) return;
    last = now;
    const width = 30;
    const lines = layers.map((l, i) => {
      const total = l.uncompressed_size ?? 0;
      const done = total ? Math.min(1, got[i]! / total) : 0;
      const bar = '#'.repeat(Math.round(done * width)).padEnd(width, '-');
      return `layer ${String(i + 1).padStart(2)}/${layers.length} ${l.diff_id.slice(7, 19)} [${bar}] ${mb(got[i]!)}/${mb(total)} MB ${state[i]}`;
    });
    stream.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((line) => `\x1b[2K${line}\n`).join('')}`);
    drawn = lines.length;
  };
  const say = (i: number, what: string) => {
    state[i] = what;
    if (stream.isTTY) draw(true);
    else stream.write(`layer ${i + 1}/${layers.length} ${layers[i]!.diff_id} ${what} (${mb(got[i]!)} MB)\n`);
  };
  return {
    plan(planned) {
      layers = planned;
      for (let i = 0; i < planned.length; i++) (got[i] = 0), (state[i] = 'waiting');
      draw(true);
    },
    downloaded(i, bytes) {
      got[i] = bytes;
      if (state[i] === 'waiting') state[i] = 'downloading';
      draw();
    },
    // Only file contents are fetched (not tar headers): a finished layer's bar is full.
    applied: (i) => ((got[i] = layers[i]!.uncompressed_size ?? got[i]!), say(i, 'applied')),
    done: () => draw(true),
  };
}

/** Connection errors that mean no server is there: say so, and how to point at one. */
const NO_SERVER = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH']);

function unreachable(e: unknown, server: string): string | undefined {
  const code = errorCodeIn(e, NO_SERVER);
  if (!code) return undefined;
  return `no pullthrough server answers at ${server} (${code}). Start one there (npm start in its checkout), or point this command at one with --server URL or PULLTHROUGH_URL=URL`;
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        server: { type: 'string' },
        platform: { type: 'string', multiple: true },
        concurrency: { type: 'string' },
        'dry-run': { type: 'boolean' },
        extract: { type: 'boolean' },
        wait: { type: 'boolean' },
        timeout: { type: 'string' },
        'from-file': { type: 'string' },
        as: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const [command, image, dir, ...rest] = parsed.positionals;
  if (parsed.values.help) return console.log(USAGE), 0;
  if (command === 'hash-password' && !image) return hashPasswordCommand();
  if (command === 'new-token' && !image) {
    // The token goes to the CI system's secret store, the hash to AUTH_TOKENS: two lines, token first.
    const { token, hash } = await newStaticToken();
    console.log(`${token}\n${hash}`);
    return 0;
  }
  if (command === 'gc' && !image) {
    const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
    try {
      return await gcCommand(server, parsed.values['dry-run'] ?? false, credentialHeaders());
    } catch (e) {
      console.error(`pullthrough gc: ${unreachable(e, server) ?? (e as Error).message}`);
      return 1;
    }
  }
  if (command === 'warm') {
    const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
    const timeout = parsed.values.timeout === undefined ? undefined : Number(parsed.values.timeout);
    if (timeout !== undefined && !(timeout > 0)) return console.error(`--timeout must be a number of seconds > 0\n\n${USAGE}`), 2;
    try {
      const images = [...parsed.positionals.slice(1), ...(parsed.values['from-file'] ? await referencesIn(parsed.values['from-file']) : [])];
      if (images.length === 0) return console.error(`pullthrough warm: name at least one image, or --from-file\n\n${USAGE}`), 2;
      return await warmCommand({ server, images, platforms: parsed.values.platform ?? [], extract: parsed.values.extract ?? false, wait: parsed.values.wait ?? false, timeoutSeconds: timeout, headers: credentialHeaders(), out: process.stderr });
    } catch (e) {
      console.error(`pullthrough warm: ${unreachable(e, server) ?? (e as Error).message}`);
      return 1;
    }
  }
  if (command === 'import') {
    const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
    if (!image || dir || !parsed.values.as) return console.error(`pullthrough import: give one archive (or layout directory) and --as <repository>[:<tag>]\n\n${USAGE}`), 2;
    try {
      return await importCommand(server, image, parsed.values.as, credentialHeaders());
    } catch (e) {
      console.error(`pullthrough import: ${unreachable(e, server) ?? (e as Error).message}`);
      return 1;
    }
  }
  if (command === 'export') {
    const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
    if (!image || !dir || rest.length > 0) return console.error(`pullthrough export: give the image and the file to write\n\n${USAGE}`), 2;
    try {
      return await exportCommand(server, image, dir, parsed.values.platform?.[0], credentialHeaders());
    } catch (e) {
      console.error(`pullthrough export: ${unreachable(e, server) ?? (e as Error).message}`);
      return 1;
    }
  }
  if (command === 'status' && !image) {
    const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
    try {
      return await statusCommand(server, credentialHeaders());
    } catch (e) {
      console.error(`pullthrough status: ${unreachable(e, server) ?? (e as Error).message}`);
      return 1;
    }
  }
  if (command !== 'rootfs' || !image || !dir || rest.length > 0) return console.error(USAGE), 2;
  const concurrency = parsed.values.concurrency === undefined ? DEFAULT_CONCURRENCY : Number(parsed.values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1) return console.error(`--concurrency must be a whole number ≥ 1\n\n${USAGE}`), 2;
  const server = parsed.values.server ?? process.env.PULLTHROUGH_URL ?? 'http://127.0.0.1:5000';
  const started = performance.now();
  try {
    if ((parsed.values.platform?.length ?? 0) > 1) return console.error(`rootfs builds one platform: give --platform once\n\n${USAGE}`), 2;
    const report = await buildRootfs({ server, image, dir, platform: parsed.values.platform?.[0], concurrency, progress: progressDisplay(process.stderr) });
    for (const s of report.skipped) console.error(`skipped: layer ${s.layer + 1}: ${s.path}: ${s.reason}`);
    for (const r of report.rejected) console.error(`rejected: layer ${r.layer + 1}: ${r.path}: ${r.reason}`);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    console.error(`${dir}: ${report.layers} layers, ${report.entries} entries, ${mb(report.bytes)} MB from ${report.manifest} in ${seconds} s`);
    if (report.rejected.length > 0) {
      console.error(`${report.rejected.length} entries were rejected as unsafe`);
      return 3;
    }
    return 0;
  } catch (e) {
    console.error(`pullthrough rootfs: ${unreachable(e, server) ?? (e as Error).message}`);
    return 1;
  }
}

/**
 * Prints the hash of the password read from standard input (to its end, or its first line
 * on a terminal): never from the command line, where shell history and process lists
 * would keep it.
 */
async function hashPasswordCommand(): Promise<number> {
  if (process.stdin.isTTY) process.stderr.write('password (echoed; pipe it in to avoid that), then Enter: ');
  let text = '';
  for await (const chunk of process.stdin) {
    text += String(chunk);
    if (process.stdin.isTTY && text.includes('\n')) break;
  }
  const password = text.replace(/\r?\n[\s\S]*$/, '');
  if (!password) return console.error('pullthrough hash-password: no password on standard input'), 2;
  console.log(await hashPassword(password));
  return 0;
}

// The writer threads load this same file (from a bundle): only the main thread runs the command.
if (isMainThread) process.exitCode = await main(process.argv.slice(2));
