// `npm run dev:worker`: the Worker in local workerd (wrangler's unstable_startWorker, the
// same bundle and wrangler.toml as a deploy, queues run locally by Miniflare), with the
// inspector OFF. With `wrangler dev`'s inspector on, a Worker reading a large fetch body
// opens one loopback socket per chunk (50 MB → ~8,700 sockets; 100 MB dies with "Too
// many open files"), so a blob ingest cannot run under it. Vars and secrets for local
// runs go in `.dev.vars` (LIBSQL_URL, S3_*, UPSTREAMS, ...), as with `wrangler dev`.
import { unstable_startWorker } from 'wrangler';
import { fileURLToPath } from 'node:url';

type StartInput = Parameters<typeof unstable_startWorker>[0];

export interface LocalWorker {
  url: URL;
  /** The DevTools endpoint when started with `inspector: true` (127.0.0.1 only). */
  inspectorUrl?: URL;
  /** Replaces some vars and restarts the Worker. */
  setVars(vars: Record<string, string>): Promise<void>;
  dispose(): Promise<void>;
}

const asBindings = (vars: Record<string, string>) => Object.fromEntries(Object.entries(vars).map(([k, value]) => [k, { type: 'plain_text' as const, value }]));

/**
 * Starts the Worker on 127.0.0.1 (port 0 picks a free one) with `vars` over wrangler.toml's.
 * `inspector: true` opens DevTools on a free loopback port: only measurements (isolate
 * heap) use it, with no Network domain enabled; large bodies stream fine that way.
 */
export async function startLocalWorker(options: { port?: number; vars?: Record<string, string>; persistDir?: string; inspector?: boolean } = {}): Promise<LocalWorker> {
  let vars = options.vars ?? {};
  const worker = await unstable_startWorker({
    config: fileURLToPath(new URL('../wrangler.toml', import.meta.url)),
    ...(options.vars ? { bindings: asBindings(vars) } : {}),
    dev: {
      inspector: options.inspector ? { hostname: '127.0.0.1', port: 0 } : false,
      server: { hostname: '127.0.0.1', port: options.port ?? 0 },
      ...(options.persistDir ? { persist: options.persistDir } : {}),
    },
  } as StartInput);
  await worker.ready;
  // `ready` resolves even when workerd refuses the Worker (e.g. a compatibility date newer
  // than the binary): make sure it answers before handing it out.
  const answers = await fetch(new URL('/v2/', await worker.url)).then((res) => (void res.body?.cancel(), true), () => false);
  if (!answers) {
    await worker.dispose();
    throw new Error('the local Worker did not start: see the workerd error above');
  }
  const inspectorUrl = options.inspector ? await worker.inspectorUrl : undefined;
  const local: LocalWorker = {
    url: await worker.url,
    ...(inspectorUrl ? { inspectorUrl } : {}),
    async setVars(next) {
      vars = { ...vars, ...next };
      await worker.patchConfig({ bindings: asBindings(vars) } as Parameters<typeof worker.patchConfig>[0]);
      await worker.ready;
      local.url = await worker.url;
    },
    dispose: () => worker.dispose(),
  };
  return local;
}

if (import.meta.main) {
  const worker = await startLocalWorker({ port: Number(process.env.PORT ?? 8787) });
  console.log(`pullthrough Worker listening on ${worker.url.href} (inspector off; Ctrl-C stops it)`);
  const stop = () => void worker.dispose().then(() => process.exit(0));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
