// The `pullthrough` CLI as a sandbox host gets it: the packed tarball installed with npm
// (no checkout), run on the machine's own Node 20; refusing older Node at once; and a
// clear word when no mirror answers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { packCli } from '../../scripts/pack-cli.ts';
import { freePort } from '../setup/registry.ts';
import { systemNode } from '../setup/rootfs.ts';

const run = promisify(execFile);
const node20 = systemNode();
let dir: string;
let bin: string;

/** Runs a command; never rejects: the exit code is the answer. */
const exec = (file: string, args: string[], env: NodeJS.ProcessEnv = process.env) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { env }, (error, stdout, stderr) => resolve({ code: error ? ((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pt-cli-'));
  const tarball = await packCli();
  await run('npm', ['install', '--global', '--no-audit', '--no-fund', '--prefix', join(dir, 'prefix'), tarball]);
  bin = join(dir, 'prefix', 'bin', 'pullthrough');
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

test(`installed from the tarball, pullthrough runs on the machine's Node (${node20?.version ?? 'none found'}) through its own bin`, { skip: !node20 && 'no Node outside node_modules' }, async () => {
  assert.ok(Number(node20!.version.slice(1).split('.')[0]) >= 20, node20!.version);
  // The bin's `#!/usr/bin/env node` finds the machine's Node first, not the pinned one.
  const env = { ...process.env, PATH: `${dirname(node20!.path)}:/usr/bin:/bin` };
  const help = await exec(bin, ['--help'], env);
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /^usage: pullthrough rootfs <image> <dir>/);
  const version = await exec('/usr/bin/env', ['node', '--version'], env);
  assert.equal(version.stdout.trim(), node20!.version);
});

test('no mirror at the address: one line that says so and how to point the CLI at one', async () => {
  const port = await freePort();
  for (const how of [['--server', `http://127.0.0.1:${port}`], []]) {
    const env = { ...process.env, PULLTHROUGH_URL: `http://127.0.0.1:${port}` };
    const out = await exec(process.execPath, [bin.replace(/bin\/pullthrough$/, 'lib/node_modules/pullthrough-cli/pullthrough.mjs'), 'rootfs', 'alpine', join(dir, 'never'), ...how], env);
    assert.equal(out.code, 1);
    assert.equal(
      out.stderr.trim().split('\n').at(-1),
      `pullthrough rootfs: no pullthrough server answers at http://127.0.0.1:${port} (ECONNREFUSED). Start one there (npm start in its checkout), or point this command at one with --server URL or PULLTHROUGH_URL=URL`,
    );
  }
});

test('on a Node older than 20 the CLI refuses at once, naming the release it needs', async () => {
  // The guard is the bundle's first statement: a preloaded module makes Node report 18.
  const fake = join(dir, 'old-node.cjs');
  await writeFile(fake, "Object.defineProperty(process.versions, 'node', { value: '18.20.4' });\n");
  const out = await exec(process.execPath, ['--require', fake, join(dir, 'prefix/lib/node_modules/pullthrough-cli/pullthrough.mjs'), 'rootfs', 'alpine', join(dir, 'never')]);
  assert.equal(out.code, 1);
  assert.equal(out.stderr.trim(), `pullthrough needs Node.js 20 or newer; this is ${process.version}`);
});
