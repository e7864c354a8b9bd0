// `npm run pack:cli`: the `pullthrough` CLI as a tarball a sandbox host installs without
// this checkout (`npm install -g ./pullthrough-cli-<version>.tgz`): the one-file bundle
// and a package.json that asks for Node 20 or newer and depends on nothing.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { buildCli } from './build.ts';

export async function packCli(): Promise<string> {
  const bundle = await buildCli();
  const dist = dirname(bundle);
  const { version, description } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string; description: string };
  const stage = join(dist, 'cli-package');
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  copyFileSync(bundle, join(stage, 'pullthrough.mjs'));
  const manifest = {
    name: 'pullthrough-cli',
    version,
    description: `${description}: the client command (rootfs)`,
    private: true, // installed from the tarball, never published
    type: 'module',
    engines: { node: '>=20' },
    bin: { pullthrough: 'pullthrough.mjs' },
    files: ['pullthrough.mjs'],
  };
  writeFileSync(join(stage, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const name = execFileSync('npm', ['pack', '--silent', '--pack-destination', dist], { cwd: stage, encoding: 'utf8' }).trim().split('\n').at(-1)!;
  return join(dist, name);
}

if (import.meta.main) console.log(await packCli());
