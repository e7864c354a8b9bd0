import type { Context } from 'hono';
import type { RepositoryTarget } from '../core/oci/reference.ts';
import type { Caller } from './access.ts';
import type { SendFile } from './stored.ts';

/**
 * What the middleware puts on every request, for the routes after it. Read with `c.get(…)`:
 * Hono builds a new object from its map on every read of `c.var` (5% of a warm request).
 */
export interface AppVariables {
  /** The repository the request is about, on its configured upstream (functions/target.ts). */
  target: RepositoryTarget;
  /** Hono serves HEAD through GET handlers: the real method, so a HEAD never downloads. */
  method: 'GET' | 'HEAD';
  /** For `/api/rootfs/<image>`: the tag or digest part of the image reference. */
  reference: string;
  /** Who is asking (functions/access.ts identify). */
  caller: Caller;
  /** Throws unless the caller may pull from the repository (functions/access.ts authorize). */
  authorize: (target: RepositoryTarget) => void;
  /** The cold-work admission of this request, when there is a limit (functions/access.ts admission). */
  admit: (() => Promise<void>) | undefined;
  /** Why a token was refused, for the challenge of the 401 (`invalid_token`, `insufficient_scope`). */
  challengeError: string;
  /** How this runtime sends a local file from its descriptor (Node), when it can: functions/stored.ts. */
  sendFile: SendFile | undefined;
  /** The status of a response the runtime sent itself (`sendFile`), for the access log and metrics. */
  sentStatus: number | undefined;
}

/** The typed Hono environment of every route module. Bindings are the runtime's own. */
export interface AppEnv {
  Variables: AppVariables;
}

export type AppContext = Context<AppEnv>;

/**
 * Runs bookkeeping after the response without holding it up: `waitUntil` on Workers
 * (an isolate may stop once the response is sent otherwise), a floating promise on Node.
 * The work never rejects (it is written so); a failure is logged.
 */
export function inBackground(c: Context, work: Promise<void> | undefined): void {
  if (!work) return;
  const logged = work.catch((e: unknown) => console.error(JSON.stringify({ level: 'error', msg: 'background work failed', error: String(e) })));
  let ctx: { waitUntil(p: Promise<unknown>): void } | undefined;
  try {
    ctx = c.executionCtx;
  } catch {
    // Node: no execution context; the promise runs on its own.
  }
  ctx?.waitUntil(logged);
}
