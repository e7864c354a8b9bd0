// The Worker in workerd for tests, through the same starter as `npm run dev:worker`.
export { startLocalWorker, type LocalWorker } from '../../scripts/dev.ts';

// Nothing leaves the machine: no telemetry, and no fetch of the `Request.cf` sample.
process.env.WRANGLER_SEND_METRICS = 'false';
process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';
