/**
 * Who may do what (AUTH_RULES): grants of `pull` (and `warm`) on repository patterns per
 * upstream, and of `admin` (the operator endpoints), to named users and tokens, to
 * `authenticated` (any of them) or to `anonymous`. Nothing is allowed that no rule grants.
 *
 * Syntax: one rule per line or `;`-separated, `<grant> [<pattern>] to <who>[, <who>…]`:
 *
 *     pull docker.io/library/* to anonymous
 *     pull ghcr.io/acme/** to alice, ci
 *     warm docker.io/** to ci
 *     admin to alice
 */
import { matchesPattern, patternProblem } from './patterns.ts';

export const REPOSITORY_GRANTS = ['pull', 'warm'] as const;
export type RepositoryGrant = (typeof REPOSITORY_GRANTS)[number];
export type Grant = RepositoryGrant | 'admin';

/** Subjects every rule may name besides configured users and tokens. */
export const ANONYMOUS = 'anonymous';
export const AUTHENTICATED = 'authenticated';

export type Rule = { grant: RepositoryGrant; pattern: string; to: readonly string[] } | { grant: 'admin'; to: readonly string[] };

/** A caller: nobody in particular, or a configured user or CI token (names are unique across both). */
export type Identity = { kind: 'anonymous' } | { kind: 'user' | 'token'; name: string };

export const anonymous: Identity = { kind: 'anonymous' };

/** The rules from their text, or a message naming the first bad rule. `names`: the configured users and tokens. */
export function parseRules(text: string, names: ReadonlySet<string>): Rule[] | string {
  const rules: Rule[] = [];
  const lines = text.split(/[;\n]/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  for (const [i, line] of lines.entries()) {
    const where = `rule ${i + 1} (${JSON.stringify(line)})`;
    const m = /^(\S+)(?:\s+(\S+))?\s+to\s+(.+)$/.exec(line);
    if (!m) return `${where}: expected "<grant> [<pattern>] to <who>, …", e.g. "pull docker.io/library/* to anonymous"`;
    const [, grant, pattern, who] = m as unknown as [string, string, string | undefined, string];
    const to = who.split(',').map((w) => w.trim());
    for (const name of to) {
      if (name === ANONYMOUS || name === AUTHENTICATED) continue;
      if (!names.has(name)) return `${where}: ${JSON.stringify(name)} is not a user (AUTH_USERS), a token (AUTH_TOKENS), ${ANONYMOUS} or ${AUTHENTICATED}`;
    }
    if (grant === 'admin') {
      if (pattern !== undefined) return `${where}: admin is granted without a pattern ("admin to <who>")`;
      if (to.includes(ANONYMOUS)) return `${where}: admin is never granted to anonymous`;
      rules.push({ grant, to });
      continue;
    }
    if (!(REPOSITORY_GRANTS as readonly string[]).includes(grant)) return `${where}: the grant must be pull, warm or admin, not ${JSON.stringify(grant)}`;
    if (pattern === undefined) return `${where}: ${grant} needs a repository pattern, e.g. docker.io/library/*`;
    const problem = patternProblem(pattern);
    if (problem) return `${where}: the pattern ${problem}`;
    rules.push({ grant: grant as RepositoryGrant, pattern, to });
  }
  return rules;
}

/** The rules of a configuration without AUTH_RULES: anonymous pull of every upstream that carries no credentials. */
export function defaultRules(uncredentialedHosts: Iterable<string>): Rule[] {
  return [...uncredentialedHosts].map((host) => ({ grant: 'pull' as const, pattern: `${host}/**`, to: [ANONYMOUS] }));
}

const appliesTo = (rule: Rule, identity: Identity): boolean =>
  identity.kind === 'anonymous' ? rule.to.includes(ANONYMOUS) : rule.to.includes(AUTHENTICATED) || rule.to.includes(identity.name);

/** Whether a rule grants `identity` the admin grant, or `grant` on a repository of an upstream. */
export function allows(rules: readonly Rule[], identity: Identity, grant: Grant, target?: { upstream: string; name: string }): boolean {
  return rules.some((rule) => {
    if (rule.grant !== grant || !appliesTo(rule, identity)) return false;
    if (rule.grant === 'admin') return true;
    return target !== undefined && matchesPattern(rule.pattern, target.upstream, target.name);
  });
}
