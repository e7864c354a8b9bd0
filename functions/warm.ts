import { Hono, type Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { OciError } from '../core/oci/errors.ts';
import { parseWarmRequest, startWarm, warmStatus, type WarmDeps } from '../core/cache/warm.ts';
import type { Identity } from '../core/auth/rules.ts';
import type { AccessDeps } from './access.ts';
import type { AppEnv } from './env.ts';
import { toWire } from './wire.ts';

/** The largest request body taken (200 references fit many times over). */
const MAX_BODY_BYTES = 64 * 1024;
/** How often the event stream looks at a run's rows. */
const EVENTS_POLL_MS = 500;

const who = (identity: Identity) => (identity.kind === 'anonymous' ? 'anonymous' : `${identity.kind}:${identity.name}`);

/**
 * `POST /api/warm` (the admin grant, or `warm` on every image named; with no users or
 * tokens configured, `pull` on them), answered at once (202) with the run's id;
 * `GET /api/warm/<id>` its progress per image and blob; `GET /api/warm/<id>/events` the
 * same as server-sent events (`progress` on each change, `end` when it is done or failed).
 * A run is readable by the admin and by whoever asked for it.
 */
export function warmRoutes(deps: WarmDeps, access: AccessDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const rules = access.access;

  app.post('/warm', async (c) => {
    const { identity } = c.get('caller');
    const text = await c.req.text();
    if (text.length > MAX_BODY_BYTES) throw new OciError('REQUEST_INVALID', 'the request body is too large', { limit: MAX_BODY_BYTES });
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new OciError('REQUEST_INVALID', 'the request body is not JSON: {"images": ["alpine:3.20", …]}');
    }
    const request = parseWarmRequest(body, deps);
    if (!rules.may(identity, 'admin')) {
      const refused = request.images.filter(({ target }) => !(rules.may(identity, 'warm', target) || (rules.anonymousOnly && rules.may(identity, 'pull', target))));
      if (refused.length > 0) {
        if (identity.kind === 'anonymous' && !rules.anonymousOnly) throw new OciError('UNAUTHORIZED', 'authentication required');
        throw new OciError('DENIED', 'requested access to the resource is denied', { grant: 'warm', images: refused.map((i) => i.reference) });
      }
    }
    const id = await startWarm(deps, request, who(identity));
    // Behind a proxy (TLS terminated in front), the request's origin is not the client's.
    const base = deps.routing.publicUrl ?? new URL(c.req.url).origin;
    c.header('Location', `/api/warm/${id}`);
    return c.json({ id, status_url: `${base}/api/warm/${id}`, events_url: `${base}/api/warm/${id}/events` }, 202);
  });

  /** The run, if this caller may read it; WARM_UNKNOWN otherwise (a run of someone else's is not confirmed to exist). */
  const readable = async (c: Context<AppEnv>) => {
    const id = c.req.param('id') ?? '';
    const run = await deps.catalog.warmRun(id);
    const { identity } = c.get('caller');
    if (!run || !(rules.anonymousOnly || rules.may(identity, 'admin') || run.requestedBy === who(identity))) {
      if (run && identity.kind === 'anonymous') throw new OciError('UNAUTHORIZED', 'authentication required');
      throw new OciError('WARM_UNKNOWN', 'no warm-up with this id', { id });
    }
    return id;
  };

  app.get('/warm/:id', async (c) => {
    const status = await warmStatus(deps, await readable(c));
    c.header('Cache-Control', 'no-store');
    return c.json(toWire(status!));
  });

  app.get('/warm/:id/events', async (c) => {
    const id = await readable(c);
    c.header('Cache-Control', 'no-store');
    return streamSSE(c, async (stream) => {
      let last = '';
      while (!stream.aborted) {
        const status = await warmStatus(deps, id);
        if (!status) return;
        const data = JSON.stringify(toWire(status));
        if (data !== last) await stream.writeSSE({ event: 'progress', data });
        last = data;
        if (status.state === 'done' || status.state === 'failed') {
          await stream.writeSSE({ event: 'end', data: JSON.stringify({ state: status.state }) });
          return;
        }
        await stream.sleep(EVENTS_POLL_MS);
      }
    });
  });
  return app;
}
