import { Hono } from 'hono';
import { status, type StatusDeps } from '../core/registry/status.ts';
import type { AccessDeps } from './access.ts';
import type { AppEnv } from './env.ts';
import { statusPage } from './status-page.ts';
import { toWire } from './wire.ts';

/**
 * `GET /` (the status page) and `GET /api/status` (the same summary as JSON, what
 * `pullthrough status` prints). Everyone sees the totals; upstreams, repositories and
 * failures need the admin grant once access control is on (with no users or tokens
 * configured, everyone sees everything, as with `/metrics`). `/?details=1` asks a
 * browser for Basic credentials.
 */
export function statusRoutes(deps: StatusDeps, access: AccessDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const detailed = (identity: AppEnv['Variables']['caller']['identity']) => access.access.anonymousOnly || access.access.may(identity, 'admin');
  app.get('/api/status', async (c) => {
    const summary = await status(deps, { details: detailed(c.get('caller').identity) });
    c.header('Cache-Control', 'no-store');
    return c.json(toWire(summary));
  });
  app.get('/', async (c) => {
    const details = detailed(c.get('caller').identity);
    if (c.req.query('details') !== undefined && !details) {
      const realm = c.get('caller').identity.kind === 'anonymous' ? 'sign in' : 'this account is not an administrator';
      return c.html(`<!doctype html><title>pullthrough</title><p>The details need an administrator (${realm}). <a href="/">Back to the status page</a>.</p>`, 401, {
        'WWW-Authenticate': 'Basic realm="pullthrough", charset="UTF-8"',
        'Cache-Control': 'no-store',
      });
    }
    const summary = await status(deps, { details });
    c.header('Cache-Control', 'no-store');
    return c.html(statusPage(summary, { signIn: !details }));
  });
  return app;
}
