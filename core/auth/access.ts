/**
 * Client authentication and the decisions on it, over the configuration (AUTH_*): Basic
 * credentials of users (PBKDF2 hashes) and of CI tokens (SHA-256 of a random token), the
 * mirror's own bearer tokens (core/auth/token.ts) and the rules (core/auth/rules.ts).
 * Pure Web Crypto: the same on Node and workerd. Secrets are compared in constant time and
 * never kept, logged or returned; what is cached is a SHA-256 of the credentials.
 */
import { base64url, constantTimeEqual, hashPassword, parsePasswordHash, verifyPassword, type ParsedHash } from './password.ts';
import { signToken, verifyToken, type SigningKey, type TokenClaims } from './token.ts';
import { allows, anonymous, type Grant, type Identity, type Rule } from './rules.ts';
import { remembered } from '../memo.ts';

/** CI tokens start with this, so a bearer value says what it is without a lookup. */
export const STATIC_TOKEN_PREFIX = 'pt_';
const STATIC_TOKEN_BYTES = 32;

/** A verified Basic login is remembered this long, so a client's every request does not cost a PBKDF2 run. */
const LOGIN_CACHE_MS = 60_000;
const LOGIN_CACHE_ENTRIES = 1024;
/** Access decisions remembered (they cannot change while the process runs: the rules are configuration). */
const DECISION_CACHE_ENTRIES = 10_000;

export interface AuthConfig {
  /** User name → password hash (`pullthrough hash-password`). */
  users: ReadonlyMap<string, ParsedHash>;
  /** Token name → SHA-256 of the token (`pullthrough new-token`). */
  tokens: ReadonlyMap<string, Uint8Array>;
  rules: readonly Rule[];
  /** AUTH_RULES was not set: the default rules apply (anonymous pull of uncredentialed upstreams). */
  defaultRules: boolean;
  /** The first signs, all verify. */
  keys: readonly SigningKey[];
  /** The keys were made at start (AUTH_TOKEN_KEYS unset): tokens die with the process. */
  keysGenerated: boolean;
  tokenTtlSeconds: number;
  /** The `service` of challenges and the audience of tokens. */
  service: string;
}

/** A repository as tokens name it: `<upstream>/<name>`. */
export const scopeName = (target: { upstream: string; name: string }) => `${target.upstream}/${target.name}`;

/** What a bearer token of ours says, checked. */
export type BearerVerdict = { ok: true; identity: Identity; claims: TokenClaims } | { ok: false; reason: string };

export const sha256 = async (text: string): Promise<Uint8Array> => new Uint8Array(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(text)));

/** A new CI token and what AUTH_TOKENS stores of it: `sha256:<hex>`. */
export async function newStaticToken(): Promise<{ token: string; hash: string }> {
  const token = STATIC_TOKEN_PREFIX + base64url.encode(crypto.getRandomValues(new Uint8Array(STATIC_TOKEN_BYTES)));
  return { token, hash: `sha256:${hex(await sha256(token))}` };
}

/** The digest of a stored token hash, or a message saying what is wrong with it. */
export function parseTokenHash(stored: string): Uint8Array | string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(stored);
  if (!m) return 'not a token hash made by `pullthrough new-token` (sha256:<64 hex>)';
  return Uint8Array.from(m[1]!.match(/../g)!, (h) => parseInt(h, 16));
}

const hex = (bytes: Uint8Array) => [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');

/** Verifying a login for a name nobody has still costs one PBKDF2 run, so timing does not say which names exist. */
let decoy: Promise<ParsedHash> | undefined;
const decoyHash = () => (decoy ??= hashPassword(crypto.randomUUID()).then((h) => parsePasswordHash(h) as ParsedHash));

export class Access {
  readonly config: AuthConfig;
  readonly #now: () => number;
  /** SHA-256 of `user\0password` → the identity it proved, until when. */
  readonly #logins = new Map<string, { identity: Identity; until: number }>();
  /** Identity, grant and repository → what the rules say (the oldest go first past DECISION_CACHE_ENTRIES). */
  readonly #decisions = new Map<string, boolean>();

  constructor(config: AuthConfig, now: () => number = Date.now) {
    this.config = config;
    this.#now = now;
  }

  /**
   * No users and no tokens: everyone is anonymous, so `GET /v2/` needs no challenge and a
   * presented credential can only be wrong.
   */
  get anonymousOnly(): boolean {
    return this.config.users.size === 0 && this.config.tokens.size === 0;
  }

  may(identity: Identity, grant: Grant, target?: { upstream: string; name: string }): boolean {
    if (identity.kind !== 'anonymous' && !this.#exists(identity)) return false;
    // The rules are this process's configuration: a decision holds as long as the process.
    const key = `${identity.kind}:${identity.kind === 'anonymous' ? '' : identity.name}\u0000${grant}\u0000${target ? `${target.upstream}/${target.name}` : ''}`;
    return remembered(this.#decisions, DECISION_CACHE_ENTRIES, key, () => allows(this.config.rules, identity, grant, target));
  }

  #exists(identity: Identity): boolean {
    if (identity.kind === 'user') return this.config.users.has(identity.name);
    if (identity.kind === 'token') return this.config.tokens.has(identity.name);
    return true;
  }

  /** The identity Basic credentials prove (a user's password, or a token under its name), or undefined. */
  async basic(user: string, password: string): Promise<Identity | undefined> {
    if (this.config.tokens.has(user)) {
      // A CI token logs in as the password of its name (names are unique across users and tokens).
      const identity = await this.staticToken(password);
      return identity?.kind === 'token' && identity.name === user ? identity : undefined;
    }
    const key = hex(await sha256(`${user}\0${password}`));
    const now = this.#now();
    const cached = this.#logins.get(key);
    if (cached && cached.until > now && this.#exists(cached.identity)) return cached.identity;
    const stored = this.config.users.get(user);
    const ok = await verifyPassword(password, stored ?? (await decoyHash()));
    if (!ok || !stored) return undefined;
    const identity: Identity = { kind: 'user', name: user };
    if (this.#logins.size >= LOGIN_CACHE_ENTRIES) this.#logins.delete(this.#logins.keys().next().value!);
    this.#logins.set(key, { identity, until: now + LOGIN_CACHE_MS });
    return identity;
  }

  /** The CI token a `pt_…` value is, or undefined. Every stored hash is compared, in constant time. */
  async staticToken(token: string): Promise<Identity | undefined> {
    const digest = await sha256(token);
    let found: string | undefined;
    for (const [name, stored] of this.config.tokens) if (constantTimeEqual(digest, stored)) found = name;
    return found === undefined ? undefined : { kind: 'token', name: found };
  }

  /**
   * A token for `identity` granting pull on those of `wanted` (as `<upstream>/<name>`)
   * the rules allow it; what is not allowed is left out, as the token flow does.
   */
  async issue(identity: Identity, wanted: ReadonlyArray<{ upstream: string; name: string }>): Promise<{ token: string; expiresIn: number; issuedAt: Date }> {
    const now = Math.floor(this.#now() / 1000);
    const granted = wanted.filter((t) => this.may(identity, 'pull', t)).map((t) => ({ type: 'repository' as const, name: scopeName(t), actions: ['pull'] }));
    const claims: TokenClaims = { sub: subjectOf(identity), aud: this.config.service, iat: now, exp: now + this.config.tokenTtlSeconds, access: granted };
    return { token: await signToken(claims, this.config.keys[0]!), expiresIn: this.config.tokenTtlSeconds, issuedAt: new Date(now * 1000) };
  }

  /** A bearer token of ours: who it names and what it grants, or why it is refused. */
  async bearer(token: string): Promise<BearerVerdict> {
    const verdict = await verifyToken(token, this.config.keys, this.config.service, Math.floor(this.#now() / 1000));
    if (!verdict.ok) return verdict;
    const identity = identityOf(verdict.claims.sub);
    if (!identity || !this.#exists(identity)) return { ok: false, reason: 'unknown subject' };
    return { ok: true, identity, claims: verdict.claims };
  }
}

/** How a token's `sub` names an identity. */
function subjectOf(identity: Identity): string {
  return identity.kind === 'anonymous' ? '' : `${identity.kind}:${identity.name}`;
}

function identityOf(sub: string): Identity | undefined {
  if (sub === '') return anonymous;
  const m = /^(user|token):(.+)$/.exec(sub);
  return m ? { kind: m[1] as 'user' | 'token', name: m[2]! } : undefined;
}

/** Whether a token's claims grant pull on the repository. */
export const tokenGrants = (claims: Pick<TokenClaims, 'access'>, target: { upstream: string; name: string }): boolean =>
  claims.access.some((a) => a.type === 'repository' && a.name === scopeName(target) && a.actions.includes('pull'));
