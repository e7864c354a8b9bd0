import { Hono } from 'hono';
import { admitting } from '../core/registry/admission.ts';
import { rootfsPlan, type PlanDeps } from '../core/sandbox/plan.ts';
import { parsePlatform } from '../core/oci/manifest.ts';
import { inBackground, type AppEnv } from './env.ts';
import { target, type RoutingConfig } from './target.ts';
import { wirePlan } from './wire.ts';
import type { AccessDeps } from './access.ts';

/** Seconds a client should wait before asking for a plan again while layers extract. */
const PLAN_RETRY_AFTER_SECONDS = 2;

/** `GET /api/rootfs/<image>?platform=os/arch[/variant]`: the layer plan of an image. */
export function rootfsRoutes(plan: PlanDeps, routing: RoutingConfig, access: AccessDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.get('/rootfs/:image{.+}', target(routing, 'image'), async (c) => {
    const platformText = c.req.query('platform');
    const answer = await rootfsPlan({ ...plan, manifests: admitting(plan.manifests, c.get('admit')) }, c.get('target'), c.get('reference'), platformText ? parsePlatform(platformText) : undefined);
    inBackground(c, answer.background);
    // Behind a proxy (TLS terminated in front), the request's origin is not the client's.
    // Where access is controlled, this server's layer URLs carry a token for the repository,
    // so that a sandbox handed the plan reads them without credentials of its own.
    const issued = access.access.anonymousOnly ? undefined : await access.access.issue(c.get('caller').identity, [c.get('target')]);
    const token = issued && { token: issued.token, expiresAt: issued.issuedAt.getTime() + issued.expiresIn * 1000 };
    const body = wirePlan(answer, routing.publicUrl ?? new URL(c.req.url).origin, token);
    const waiting = answer.layers.some((l) => l.state === 'pending' || l.state === 'extracting');
    if (waiting) c.header('Retry-After', String(PLAN_RETRY_AFTER_SECONDS));
    c.header('Cache-Control', 'no-store'); // presigned URLs expire
    return c.json(body, waiting ? 202 : 200);
  });
  return app;
}
