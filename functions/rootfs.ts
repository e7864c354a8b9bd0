import { Hono } from 'hono';
import { rootfsPlan, type PlanDeps } from '../core/sandbox/plan.ts';
import { parsePlatform } from '../core/oci/manifest.ts';
import type { AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';
import { wirePlan } from './wire.ts';

/** Seconds a client should wait before asking for a plan again while layers extract. */
const PLAN_RETRY_AFTER_SECONDS = 2;

/** `GET /api/rootfs/<image>?platform=os/arch[/variant]`: the layer plan of an image. */
export function rootfsRoutes(plan: PlanDeps, routing: RoutingConfig): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/rootfs/:image{.+}', target(routing, 'image'), async (c) => {
    const platformText = c.req.query('platform');
    const answer = await rootfsPlan(plan, c.var.target, c.var.reference, platformText ? parsePlatform(platformText) : undefined);
    // Behind a proxy (TLS terminated in front), the request's origin is not the client's.
    const body = wirePlan(answer, routing.publicUrl ?? new URL(c.req.url).origin);
    const waiting = answer.layers.some((l) => l.state === 'pending' || l.state === 'extracting');
    if (waiting) c.header('Retry-After', String(PLAN_RETRY_AFTER_SECONDS));
    c.header('Cache-Control', 'no-store'); // presigned URLs expire
    return c.json(body, waiting ? 202 : 200);
  });
  return app;
}
