// Root filesystems to compare: `pullthrough rootfs` (the CLI, as a user runs it) and the
// reference, Debian's umoci unpacking the same image copied straight from the upstream.
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chown, copyFile, lstat, mkdir, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Registry } from './registry.ts';
import type { LayerSpec } from './images.ts';
import type { WireLayer as PlannedLayer, WirePlan as RootfsPlan } from '../../functions/wire.ts';
import { until } from './process.ts';
import { buildCli } from '../../scripts/build.ts';

const run = promisify(execFile);

/** A plan as the server sends it once every layer is ready: every URL is there. */
export type ServedPlan = Omit<RootfsPlan, 'layers'> & {
  layers: Array<Omit<PlannedLayer, 'tar_url' | 'toc_url' | 'uncompressed_size'> & { tar_url: string; toc_url: string; files_url: string; uncompressed_size: number }>;
};

/**
 * Polls `GET <server>/api/rootfs/<image>` until it answers 200 (every layer extracted);
 * any status but 200 and 202 fails at once.
 */
export async function readyPlan(server: string | URL, image: string, options: { platform?: string | undefined; deadlineMs?: number } = {}): Promise<ServedPlan> {
  const url = new URL(`/api/rootfs/${image}`, server);
  if (options.platform) url.searchParams.set('platform', options.platform);
  let plan: unknown;
  await until(async () => {
    const res = await fetch(url);
    plan = await res.json();
    if (res.status !== 200 && res.status !== 202) throw new Error(`the plan of ${image} answered ${res.status}: ${JSON.stringify(plan)}`);
    return res.status === 200;
  }, options.deadlineMs ?? 120_000, `the plan of ${image}`);
  return plan as ServedPlan;
}
/** A layer tar by GNU tar from a tree `build` makes in `root`, holding exactly `paths` (no recursion). */
export async function gnuLayer(root: string, format: 'pax' | 'gnu', build: (root: string) => Promise<void>, paths: string[]): Promise<LayerSpec> {
  await mkdir(root, { recursive: true });
  await build(root);
  return { tar: execFileSync('tar', [`--format=${format}`, '--no-recursion', '--numeric-owner', '-C', root, '-cf', '-', ...paths], { maxBuffer: 64 * 1024 * 1024 }) };
}

let cli: Promise<string> | undefined;

/**
 * The machine's own Node (not the pinned dev dependency): sandbox hosts run the CLI on
 * whatever maintained release they have, and CI machines come with Node 20. Undefined
 * when there is none outside node_modules.
 */
export function systemNode(): { path: string; version: string } | undefined {
  for (const path of ['/usr/bin/node', '/usr/local/bin/node']) {
    try {
      return { path, version: execFileSync(path, ['--version'], { encoding: 'utf8' }).trim() };
    } catch {}
  }
  return undefined;
}

/**
 * Runs `pullthrough rootfs …` as a process, from the bundle `npx pullthrough` runs (built
 * once per test process): on the pinned Node unless `node` says another, as another user
 * with `as`. Such a user may not read this checkout (a clone in a 0700 directory): the
 * bundle is then copied into `copyTo`, a directory of theirs. Never rejects: the exit
 * code is the answer.
 */
export async function pullthroughRootfs(args: string[], options: { as?: { uid: number; gid: number }; node?: string; copyTo?: string; env?: Record<string, string> } = {}): Promise<{ code: number; stderr: string }> {
  let entry = await (cli ??= buildCli());
  if (options.copyTo) {
    const copy = join(options.copyTo, 'pullthrough.mjs');
    await copyFile(entry, copy);
    if (options.as) await chown(copy, options.as.uid, options.as.gid);
    entry = copy;
  }
  return new Promise((resolve) => {
    execFile(options.node ?? process.execPath, [entry, 'rootfs', ...args], { maxBuffer: 16 * 1024 * 1024, ...options.as, ...(options.env ? { env: { ...process.env, ...options.env } } : {}) }, (error, _stdout, stderr) => {
      resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stderr });
    });
  });
}

/**
 * `skopeo copy` from the upstream into an OCI layout, then `umoci unpack`: the reference
 * root filesystem, at `<dir>/bundle/rootfs`. umoci 0.4.7 (Debian's) cannot read zstd
 * layers: `recompress` has skopeo turn them into gzip on the way (same tars, same diff_ids).
 */
export async function umociRootfs(registry: Registry, image: string, dir: string, options: { arch?: string | undefined; recompress?: boolean } = {}): Promise<string> {
  await mkdir(dir, { recursive: true });
  const layout = join(dir, 'layout');
  const args = [...(options.arch ? ['--override-arch', options.arch] : []), ...(options.recompress ? ['--dest-compress', '--dest-compress-format', 'gzip'] : [])];
  await run('skopeo', ['copy', '--quiet', '--src-tls-verify=false', ...args, `docker://${registry.host}/${image}`, `oci:${layout}:ref`]);
  const rootless = process.getuid?.() === 0 ? [] : ['--rootless'];
  await run('umoci', ['unpack', ...rootless, '--image', `${layout}:ref`, join(dir, 'bundle')], { maxBuffer: 16 * 1024 * 1024 });
  return join(dir, 'bundle', 'rootfs');
}

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'chardev' | 'blockdev' | 'socket';
  /** Permission and set-id bits. */
  mode: string;
  link?: string;
  sha256?: string;
  /** Other paths of the same inode (hard links), sorted. */
  links?: string[];
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every path under `root` (not root itself) with type, mode, link target and content hash. */
export async function snapshot(root: string): Promise<Record<string, TreeEntry>> {
  const out: Record<string, TreeEntry> = {};
  const inodes = new Map<number, string[]>();
  const walk = async (rel: string) => {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const abs = join(root, path);
      const st = await lstat(abs);
      const mode = (st.mode & 0o7777).toString(8).padStart(4, '0');
      if (st.isDirectory()) {
        out[path] = { type: 'dir', mode };
        await walk(path);
      } else if (st.isSymbolicLink()) out[path] = { type: 'symlink', mode: 'n/a', link: await readlink(abs) };
      else if (st.isFile()) {
        out[path] = { type: 'file', mode, sha256: await sha256File(abs) };
        if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), path]);
      } else out[path] = { type: st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'chardev' : st.isBlockDevice() ? 'blockdev' : 'socket', mode };
    }
  };
  await walk('');
  for (const paths of inodes.values()) for (const p of paths) out[p]!.links = paths.filter((q) => q !== p).sort();
  return out;
}
