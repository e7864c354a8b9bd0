/**
 * The mirror's own bearer tokens (the registry token flow: `GET /token` hands one out,
 * `/v2/` requests carry it): a JWT signed with HMAC-SHA256 through Web Crypto, so Node
 * and workerd both sign and verify. Keys come from configuration by key id; the first is
 * the one that signs, the others still verify (rotation: add a new key first, drop the
 * old one once its tokens have expired).
 */
import { base64url } from './password.ts';

export interface SigningKey {
  id: string;
  /** At least 32 bytes of secret. */
  secret: Uint8Array;
}

/** What a token grants: who, and which actions on which repositories of which upstream. */
export interface TokenClaims {
  /** The identity (user name, `token:<name>`, or empty for anonymous). */
  sub: string;
  /** The service the token is for (our name). */
  aud: string;
  iat: number;
  exp: number;
  access: Array<{ type: 'repository'; name: string; actions: string[] }>;
}

const encoder = new TextEncoder();
type HmacKey = Awaited<ReturnType<typeof crypto.subtle.importKey>>;
const keyCache = new WeakMap<Uint8Array, Promise<HmacKey>>();

function hmacKey(secret: Uint8Array): Promise<HmacKey> {
  let key = keyCache.get(secret);
  if (!key) {
    key = crypto.subtle.importKey('raw', secret, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']);
    keyCache.set(secret, key);
  }
  return key;
}

const json = (value: unknown) => base64url.encode(encoder.encode(JSON.stringify(value)));

export async function signToken(claims: TokenClaims, key: SigningKey): Promise<string> {
  const input = `${json({ alg: 'HS256', typ: 'JWT', kid: key.id })}.${json(claims)}`;
  const signature = new Uint8Array(await crypto.subtle.sign('HMAC', await hmacKey(key.secret), encoder.encode(input)));
  return `${input}.${base64url.encode(signature)}`;
}

export type TokenVerdict = { ok: true; claims: TokenClaims } | { ok: false; reason: 'malformed' | 'unknown key' | 'bad signature' | 'expired' | 'wrong audience' };

function decodeJson(part: string): unknown {
  const bytes = base64url.decode(part);
  if (!bytes) return undefined;
  try {
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    return undefined;
  }
}

function isClaims(v: unknown): v is TokenClaims {
  const c = v as TokenClaims;
  return (
    typeof c === 'object' && c !== null && typeof c.sub === 'string' && typeof c.aud === 'string' && Number.isFinite(c.iat) && Number.isFinite(c.exp) &&
    Array.isArray(c.access) && c.access.every((a) => a && a.type === 'repository' && typeof a.name === 'string' && Array.isArray(a.actions) && a.actions.every((x) => typeof x === 'string'))
  );
}

/** Checks a token's signature (constant-time, by Web Crypto), its audience and its expiry at `nowSeconds`. */
export async function verifyToken(token: string, keys: readonly SigningKey[], audience: string, nowSeconds: number): Promise<TokenVerdict> {
  const parts = token.split('.');
  if (parts.length !== 3) return { ok: false, reason: 'malformed' };
  const [header, payload, signature] = parts as [string, string, string];
  const h = decodeJson(header) as { alg?: unknown; kid?: unknown } | undefined;
  const sig = base64url.decode(signature);
  if (!h || h.alg !== 'HS256' || typeof h.kid !== 'string' || !sig) return { ok: false, reason: 'malformed' };
  const key = keys.find((k) => k.id === h.kid);
  if (!key) return { ok: false, reason: 'unknown key' };
  const valid = await crypto.subtle.verify('HMAC', await hmacKey(key.secret), sig, encoder.encode(`${header}.${payload}`));
  if (!valid) return { ok: false, reason: 'bad signature' };
  const claims = decodeJson(payload);
  if (!isClaims(claims)) return { ok: false, reason: 'malformed' };
  if (claims.aud !== audience) return { ok: false, reason: 'wrong audience' };
  if (claims.exp <= nowSeconds) return { ok: false, reason: 'expired' };
  return { ok: true, claims };
}
