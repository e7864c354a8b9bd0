import { Hono } from 'hono';
import { routePath } from 'hono/route';
import { OciError } from '../core/oci/errors.ts';
import type { Metrics } from '../core/ports/metrics.ts';
import type { ManifestDeps } from '../core/registry/manifests.ts';
import type { BlobDeps } from '../core/registry/blobs.ts';
import type { TagDeps } from '../core/registry/tags.ts';
import type { PlanDeps } from '../core/sandbox/plan.ts';
import type { LayerDeps } from '../core/sandbox/layer-files.ts';
import type { AppEnv } from './env.ts';
import type { SendFile } from './stored.ts';
import type { RoutingConfig } from './target.ts';
import { errorResponse, statusOf } from './errors.ts';
import { manifestRoutes } from './manifests.ts';
import { blobRoutes } from './blobs.ts';
import { tagRoutes } from './tags.ts';
import { referrerRoutes } from './referrers.ts';
import { rootfsRoutes } from './rootfs.ts';
import { layerRoutes } from './layers.ts';
import { tokenRoutes } from './token.ts';
import { gcRoutes } from './gc.ts';
import type { GcDeps } from '../core/cache/gc.ts';
import type { StatusDeps } from '../core/registry/status.ts';
import type { WarmDeps } from '../core/cache/warm.ts';
import { warmRoutes } from './warm.ts';
import type { ImportDeps } from '../core/cache/import.ts';
import { importRoutes } from './import.ts';
import { exportRoutes } from './export.ts';
import { statusRoutes } from './status.ts';
import { challenge, identify, requireGrant, type AccessDeps } from './access.ts';
import type { Replays } from './replay.ts';
import { logRequest, loggedPath } from './request-log.ts';

export interface AppDeps {
  manifests: ManifestDeps;
  blobs: BlobDeps;
  tags: TagDeps;
  routing: RoutingConfig;
  plan: PlanDeps;
  layers: LayerDeps;
  /** Who may pull what: identities, rules, token keys, the cold-work limit. */
  access: AccessDeps;
  gc: GcDeps;
  warm: WarmDeps;
  import: ImportDeps;
  status: StatusDeps;
  /** The Prometheus exposition of `/metrics`, where the runtime keeps metrics (Node); else only the catalog's gauges. */
  metricsExposition: () => Promise<string>;
  /** The access log: one entry per request (the path has no credentials; headers are not logged). */
  log: (entry: Record<string, unknown>) => void;
  metrics: Metrics;
  /** Node: stored files sent from their descriptors (functions/stored.ts). */
  sendFile?: SendFile | undefined;
  /** Where the runtime gives warm answers again without the app (Node): the routes keep them there. */
  replays?: Replays | undefined;
}

/** The HTTP app: one route module per resource, one error handler. Handlers only translate HTTP to core calls. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.use(async (c, next) => {
    const started = performance.now();
    if (deps.sendFile) c.set('sendFile', deps.sendFile);
    await next();
    const status = c.get('sentStatus') ?? c.res.status;
    const ms = Math.round(performance.now() - started);
    logRequest(deps.log, deps.metrics, { method: c.req.method, path: loggedPath(c), route: routePath(c), status, ms });
  });
  app.use(identify(deps.access));
  app.route('/', tokenRoutes(deps.access, deps.routing));
  app.route('/v2', manifestRoutes(deps.manifests, deps.routing, deps.metrics, deps.replays));
  app.route('/v2', blobRoutes(deps.blobs, deps.routing, deps.metrics, deps.replays));
  app.route('/v2', tagRoutes(deps.tags, deps.routing));
  app.route('/v2', referrerRoutes(deps.blobs, deps.routing));
  app.route('/api', rootfsRoutes(deps.plan, deps.routing, deps.access));
  app.route('/api', layerRoutes(deps.layers, deps.routing, deps.metrics));
  app.route('/api', gcRoutes(deps.gc, deps.access));
  app.route('/api', warmRoutes(deps.warm, deps.access));
  app.route('/api', importRoutes(deps.import, deps.routing, deps.access));
  app.route('/api', exportRoutes(deps.manifests, deps.routing));
  app.route('/', statusRoutes(deps.status, deps.access));
  // The version check clients make first: where anonymous is not all there is, anonymous
  // is told to authenticate, so that clients with credentials send them.
  app.get('/v2/', (c) => {
    const caller = c.get('caller');
    if (!caller.direct && !caller.token && !deps.access.access.anonymousOnly) throw new OciError('UNAUTHORIZED', 'authentication required');
    c.header('Docker-Distribution-API-Version', 'registry/2.0');
    return c.json({});
  });
  // Prometheus scrapes here: with access control, with the admin grant (its scrape config
  // sends Basic credentials or a CI token); anyone when everyone is anonymous.
  app.get('/metrics', requireGrant(deps.access, 'admin', { openWhenAnonymousOnly: true }), async (c) => {
    return c.body(await deps.metricsExposition(), 200, { 'Content-Type': 'text/plain; version=0.0.4; charset=utf-8', 'Cache-Control': 'no-store' });
  });
  // What the rules are, for an operator (names only: no hash, no key).
  app.get('/api/access', requireGrant(deps.access, 'admin'), (c) => {
    const { config } = deps.access.access;
    return c.json({
      caller: c.get('caller').identity,
      users: [...config.users.keys()],
      tokens: [...config.tokens.keys()],
      rules: config.rules,
      default_rules: config.defaultRules,
      token_keys: config.keys.map((k) => k.id),
      token_keys_generated: config.keysGenerated,
    });
  });
  app.notFound(() => {
    throw new OciError('UNSUPPORTED', 'the operation is unsupported');
  });
  app.onError((err, c) => {
    const res = errorResponse(err);
    // Every 401 says where to get a token, for the scope this request needed.
    if (res.status === statusOf('UNAUTHORIZED')) res.headers.set('WWW-Authenticate', challenge(c, deps.access.access, deps.routing.publicUrl));
    return res;
  });
  return app;
}
