import type { Context, MiddlewareHandler } from 'hono';
import { Access, STATIC_TOKEN_PREFIX, scopeName, tokenGrants } from '../core/auth/access.ts';
import { parseAuthorization } from '../core/auth/credentials.ts';
import type { TokenClaims } from '../core/auth/token.ts';
import { anonymous, type Grant, type Identity } from '../core/auth/rules.ts';
import type { RateLimiter } from '../core/auth/rate-limit.ts';
import { OciError } from '../core/oci/errors.ts';
import type { RepositoryTarget } from '../core/oci/reference.ts';
import type { AppEnv } from './env.ts';

export interface AccessDeps {
  access: Access;
  /** The cold-work limit; absent: none. */
  limiter?: RateLimiter | undefined;
  /** The client's address as the runtime knows it (Node: the socket; Workers: CF-Connecting-IP). */
  clientAddress: (c: Context) => string | undefined;
  log: (entry: Record<string, unknown>) => void;
}

/** Who is asking, as the `identify` middleware found out. */
export interface Caller {
  identity: Identity;
  /** The claims of the mirror's own token the request carried, if it carried one. */
  token?: Pick<TokenClaims, 'access'> | undefined;
  /** Authenticated by Basic credentials or a CI token (a token of ours is `token`). */
  direct: boolean;
  address: string;
  /** Until when (epoch ms) the credentials prove this: a token's expiry; absent: as long as the process (the rules and identities are its configuration). */
  until?: number | undefined;
}

/**
 * Resolves the caller of every request once (`c.var.caller`): anonymous, or proven by
 * Basic credentials, a CI token (`Bearer pt_…`) or a token of ours from `GET /token`.
 * Credentials that prove nothing answer 401 (with the Bearer challenge, added by the
 * error handler), never a silent downgrade to anonymous. A failed login is logged with
 * the user name and address, nothing else.
 */
export function identify(deps: AccessDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const address = deps.clientAddress(c) ?? 'unknown';
    // Layer URLs handed out in plans carry their token in the query (sandboxes fetch them as they are).
    const queryToken = c.req.path.startsWith('/api/layers/') ? c.req.query('access_token') : undefined;
    const header = c.req.header('authorization') ?? (queryToken !== undefined ? `Bearer ${queryToken}` : undefined);
    const credentials = parseAuthorization(header);
    let caller: Caller = { identity: anonymous, direct: false, address };
    if (header !== undefined && !credentials) {
      deps.log({ level: 'warn', msg: 'login failed', reason: 'malformed Authorization header', address });
      throw new OciError('UNAUTHORIZED', 'authentication required', { reason: 'the Authorization header is neither Basic nor Bearer credentials' });
    }
    if (credentials?.scheme === 'basic') {
      const identity = await deps.access.basic(credentials.user, credentials.password);
      if (!identity) {
        deps.log({ level: 'warn', msg: 'login failed', user: credentials.user, address });
        throw new OciError('UNAUTHORIZED', 'incorrect username or password');
      }
      caller = { identity, direct: true, address };
    } else if (credentials?.scheme === 'bearer' && credentials.token.startsWith(STATIC_TOKEN_PREFIX)) {
      const identity = await deps.access.staticToken(credentials.token);
      if (!identity) {
        deps.log({ level: 'warn', msg: 'login failed', reason: 'unknown CI token', address });
        throw new OciError('UNAUTHORIZED', 'invalid token');
      }
      caller = { identity, direct: true, address };
    } else if (credentials?.scheme === 'bearer' && !deps.access.anonymousOnly) {
      // With no users or tokens configured everyone is anonymous: a token (perhaps signed
      // by another process's start-up key) cannot say more, so it is not checked.
      const verdict = await deps.access.bearer(credentials.token);
      if (!verdict.ok) {
        deps.log({ level: 'warn', msg: 'token refused', reason: verdict.reason, address });
        c.set('challengeError', 'invalid_token');
        throw new OciError('UNAUTHORIZED', verdict.reason === 'expired' ? 'the token has expired' : 'invalid token');
      }
      caller = { identity: verdict.identity, token: verdict.claims, direct: false, address, until: verdict.claims.exp * 1000 };
    }
    c.set('caller', caller);
    c.set('authorize', (target: RepositoryTarget) => authorize(c, deps, target));
    c.set('admit', admission(deps, caller));
    await next();
  };
}

/**
 * Whether the caller may pull from the repository; throws what the token flow answers when
 * not: 401 UNAUTHORIZED (anonymous, or a token without that scope: the client then asks
 * `/token` for it) or 403 DENIED (Basic or CI-token credentials the rules do not cover).
 * The answer depends on the rules only, never on what exists, so nothing can be probed.
 */
export function authorize(c: Context<AppEnv>, deps: AccessDeps, target: RepositoryTarget): void {
  const caller = c.get('caller');
  if (deps.access.may(caller.identity, 'pull', target) && (!caller.token || tokenGrants(caller.token, target))) return;
  if (caller.direct) throw new OciError('DENIED', 'requested access to the resource is denied', { name: scopeName(target) });
  if (caller.token) c.set('challengeError', 'insufficient_scope');
  throw new OciError('UNAUTHORIZED', 'authentication required', { name: scopeName(target) });
}

/**
 * Middleware for operator endpoints: the caller needs `grant` (admin, or warm), which
 * anonymous never has. `openWhenAnonymousOnly`: with no users or tokens configured
 * (everyone anonymous), anyone passes (`/metrics`, like the rest of such a mirror).
 */
export function requireGrant(deps: AccessDeps, grant: Exclude<Grant, 'pull'>, options: { openWhenAnonymousOnly?: boolean } = {}): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const caller = c.get('caller');
    if (!(options.openWhenAnonymousOnly && deps.access.anonymousOnly) && !deps.access.may(caller.identity, grant)) {
      if (caller.identity.kind === 'anonymous') throw new OciError('UNAUTHORIZED', 'authentication required');
      throw new OciError('DENIED', 'requested access to the resource is denied', { grant });
    }
    await next();
  };
}

/**
 * The cold-work admission of this request: the first call takes one from the caller's
 * rate (its identity; its address when anonymous), later calls in the same request are
 * free. Undefined when there is no limit.
 */
export function admission(deps: AccessDeps, caller: Caller): (() => Promise<void>) | undefined {
  const limiter = deps.limiter;
  if (!limiter) return undefined;
  const key = caller.identity.kind === 'anonymous' ? `address:${caller.address}` : `${caller.identity.kind}:${caller.identity.name}`;
  let taken: Promise<void> | undefined;
  return () =>
    (taken ??= limiter.take(key).then((verdict) => {
      if (!verdict.allowed) {
        throw new OciError('TOOMANYREQUESTS', 'too many requests for content not in the cache; retry later', { retry_after_seconds: verdict.retryAfterSeconds }, { retryAfterSeconds: verdict.retryAfterSeconds });
      }
    }));
}

/**
 * The `WWW-Authenticate` of a 401: the token endpoint (PUBLIC_URL, else the request's
 * origin), our service, the scope the request needed, and why a token was refused.
 */
export function challenge(c: Context<AppEnv>, access: Access, publicUrl: string | undefined): string {
  const realm = `${publicUrl ?? new URL(c.req.url).origin}/token`;
  let value = `Bearer realm="${realm}",service="${access.config.service}"`;
  const target = c.get('target') as RepositoryTarget | undefined;
  if (target) value += `,scope="repository:${scopeName(target)}:pull"`;
  const error = c.get('challengeError') as string | undefined;
  if (error) value += `,error="${error}"`;
  return value;
}
