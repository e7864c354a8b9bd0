// Runs workers/cloudflare.ts in workerd (wrangler's unstable_startWorker, the same bundle
// and wrangler.toml as a deploy, queues delivered by Miniflare) on 127.0.0.1, with the
// inspector off: with it on, reading a large fetch body opens a loopback socket per chunk.
import { unstable_startWorker } from 'wrangler';
import { fileURLToPath } from 'node:url';

export interface LocalWorker {
  url: URL;
  /** Replaces vars (e.g. BLOB_DELIVERY) and restarts the Worker. */
  setVars(vars: Record<string, string>): Promise<void>;
  dispose(): Promise<void>;
}

// Nothing leaves the machine: no telemetry, and no fetch of the `Request.cf` sample.
process.env.WRANGLER_SEND_METRICS = 'false';
process.env.CLOUDFLARE_CF_FETCH_ENABLED = 'false';

export async function startLocalWorker(vars: Record<string, string>, stateDir: string): Promise<LocalWorker> {
  const bindings = (v: Record<string, string>) => Object.fromEntries(Object.entries(v).map(([k, value]) => [k, { type: 'plain_text' as const, value }]));
  let current = vars;
  const worker = await unstable_startWorker({
    config: fileURLToPath(new URL('../../wrangler.toml', import.meta.url)),
    bindings: bindings(current),
    dev: { inspector: false, server: { hostname: '127.0.0.1', port: 0 }, persist: stateDir },
  } as Parameters<typeof unstable_startWorker>[0]);
  await worker.ready;
  const handle: LocalWorker = {
    url: await worker.url,
    async setVars(next) {
      current = { ...current, ...next };
      await worker.patchConfig({ bindings: bindings(current) } as Parameters<typeof worker.patchConfig>[0]);
      await worker.ready;
      handle.url = await worker.url;
    },
    dispose: () => worker.dispose(),
  };
  return handle;
}
