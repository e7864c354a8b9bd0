// `npm run bundle:worker`: bundles the Worker exactly as `wrangler deploy` would
// (`--dry-run --outdir dist/worker`), prints its size, and fails above the budget.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const BUDGET_GZIP_BYTES = 1024 * 1024;
const root = fileURLToPath(new URL('..', import.meta.url));
const outdir = `${root}dist/worker`;

execFileSync('wrangler', ['deploy', '--dry-run', '--outdir', outdir], {
  cwd: root,
  stdio: ['ignore', 'ignore', 'inherit'],
  env: { ...process.env, WRANGLER_SEND_METRICS: 'false' },
});
const bundle = readFileSync(`${outdir}/cloudflare.js`);
const gzipped = gzipSync(bundle, { level: 9 }).length;
const kib = (n: number) => `${(n / 1024).toFixed(1)} KiB`;
console.log(`worker bundle: ${kib(bundle.length)}, ${kib(gzipped)} gzipped (budget ${kib(BUDGET_GZIP_BYTES)} gzipped)`);
if (gzipped > BUDGET_GZIP_BYTES) {
  console.error('worker bundle is over its size budget');
  process.exit(1);
}
