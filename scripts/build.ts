// Bundles the Node server into dist/server.mjs and the `pullthrough` CLI into
// dist/pullthrough.mjs with esbuild. A bundle loads only the code it uses: the server
// starts at ~90 MB RSS instead of ~240 MB when Node strips types from and parses every
// module of every dependency (measured by `npm run bench`), and the CLI's writer threads
// (each loads the CLI bundle) start without a TypeScript stripper of their own. Node will
// not strip types under node_modules, so an installed `pullthrough` must be JavaScript.
import { build, type BuildOptions } from 'esbuild';
import { fileURLToPath } from 'node:url';

export const SERVER_BUNDLE = fileURLToPath(new URL('../dist/server.mjs', import.meta.url));
export const CLI_BUNDLE = fileURLToPath(new URL('../dist/pullthrough.mjs', import.meta.url));

const common: BuildOptions = {
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node24',
  sourcemap: 'linked',
  // Bundled CommonJS dependencies call require(): give the ES module one.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: 'warning',
};

export async function buildServer(): Promise<string> {
  await build({
    ...common,
    entryPoints: [fileURLToPath(new URL('../workers/node.ts', import.meta.url))],
    outfile: SERVER_BUNDLE,
    // libsql loads a native addon for the platform at run time; it stays a package.
    external: ['libsql'],
  });
  return SERVER_BUNDLE;
}

// The CLI runs on sandbox hosts, on whatever maintained Node they have: syntax for Node 20,
// and a first line that refuses older releases with a message instead of a stack trace.
const NODE_GUARD = "if (Number(process.versions.node.split('.')[0]) < 20) { console.error('pullthrough needs Node.js 20 or newer; this is ' + process.version); process.exit(1); }";

/** The CLI (`bin` in package.json; its `#!/usr/bin/env node` line is kept). */
export async function buildCli(): Promise<string> {
  await build({
    ...common,
    target: 'node20',
    banner: { js: `${NODE_GUARD}\n${common.banner!.js}` },
    entryPoints: [fileURLToPath(new URL('../cli/main.ts', import.meta.url))],
    outfile: CLI_BUNDLE,
  });
  return CLI_BUNDLE;
}

if (import.meta.main) await Promise.all([buildServer(), buildCli()]);
