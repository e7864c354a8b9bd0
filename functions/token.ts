import { Hono } from 'hono';
import { parseScope } from '../core/auth/credentials.ts';
import type { Identity } from '../core/auth/rules.ts';
import { OciError } from '../core/oci/errors.ts';
import { resolveTarget, type RepositoryTarget } from '../core/oci/reference.ts';
import type { AccessDeps } from './access.ts';
import type { AppEnv } from './env.ts';
import type { RoutingConfig } from './target.ts';

/** Form bodies of `POST /token` are small: this is far more than a scope list needs. */
const MAX_FORM_BYTES = 64 * 1024;

/**
 * The registry token flow's endpoint, where a 401's challenge sends clients:
 * `GET /token?service=…&scope=repository:<name>:pull` with Basic credentials (or none:
 * anonymous), and the OAuth2 form `POST /token` (grant_type=password) containerd tries
 * first. The token grants pull on the asked repositories the rules allow the caller;
 * the rest is left out (the request then answers 401), as distribution's token server does.
 */
export function tokenRoutes(deps: AccessDeps, routing: RoutingConfig): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const targetsOf = (scopes: string[]): RepositoryTarget[] =>
    scopes
      .flatMap((s) => s.split(' '))
      .map((s) => parseScope(s))
      .filter((s) => s !== undefined && (s.actions.includes('pull') || s.actions.includes('*')))
      .flatMap((s) => {
        try {
          return [resolveTarget(s!.name, undefined, routing.upstreamHosts, routing.defaultUpstream)];
        } catch {
          return []; // a name no configured upstream has: nothing to grant
        }
      });

  app.get('/token', async (c) => {
    const issued = await deps.access.issue(c.get('caller').identity, targetsOf(c.req.queries('scope') ?? []));
    c.header('Cache-Control', 'no-store');
    return c.json({ token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt.toISOString() });
  });

  app.post('/token', async (c) => {
    const length = Number(c.req.header('content-length') ?? NaN);
    if (!(length <= MAX_FORM_BYTES)) throw new OciError('UNSUPPORTED', 'a token request form must state its length and be at most 64 KiB');
    const form = new URLSearchParams(await c.req.text());
    let identity: Identity = c.get('caller').identity;
    const grant = form.get('grant_type');
    if (grant === 'password') {
      const user = form.get('username') ?? '';
      const proved = await deps.access.basic(user, form.get('password') ?? '');
      if (!proved) {
        deps.log({ level: 'warn', msg: 'login failed', user, address: c.get('caller').address });
        throw new OciError('UNAUTHORIZED', 'incorrect username or password');
      }
      identity = proved;
    } else if (grant !== null) {
      // No refresh tokens are handed out; a client holding none falls back to GET.
      throw new OciError('UNSUPPORTED', 'only grant_type=password is supported', { grant_type: grant });
    }
    const issued = await deps.access.issue(identity, targetsOf(form.getAll('scope')));
    c.header('Cache-Control', 'no-store');
    return c.json({ access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt.toISOString(), scope: form.getAll('scope').join(' ') });
  });
  return app;
}
