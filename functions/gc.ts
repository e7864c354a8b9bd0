import { Hono } from 'hono';
import { runGc, type GcDeps } from '../core/cache/gc.ts';
import { requireGrant, type AccessDeps } from './access.ts';
import type { AppEnv } from './env.ts';
import { wireGcReport } from './wire.ts';

/** `POST /api/gc[?dry_run=true]` (admin): one garbage-collection run, answered with its report when it ends. */
export function gcRoutes(gc: GcDeps, access: AccessDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  app.post('/gc', requireGrant(access, 'admin'), async (c) => {
    const dryRun = /^(1|true|yes)$/i.test(c.req.query('dry_run') ?? '');
    const report = await runGc(gc, { dryRun, owner: `api-${crypto.randomUUID()}` });
    c.header('Cache-Control', 'no-store');
    return c.json(wireGcReport(report), report.ran ? 200 : 409);
  });
  return app;
}
