// Test infrastructure, not product code: a libSQL server speaking Hrana over HTTP (v2,
// JSON), the protocol Turso serves and `@libsql/client`'s web build (the one workerd
// loads) speaks. No local libSQL server exists in npm or apt, so this one sits on the
// `libsql` package (SQLite) with a file per server. It implements what the client sends:
// pipelines of execute, batch (with step conditions), sequence, store_sql / close_sql,
// get_autocommit and close, with batons that keep a connection (and its transaction)
// between requests.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { randomUUID } from 'node:crypto';
import Database from 'libsql';

type HranaValue =
  | { type: 'null' }
  | { type: 'integer'; value: string }
  | { type: 'float'; value: number }
  | { type: 'text'; value: string }
  | { type: 'blob'; base64: string };

interface Stmt {
  sql?: string;
  sql_id?: number;
  args?: HranaValue[];
  named_args?: Array<{ name: string; value: HranaValue }>;
  want_rows?: boolean;
}

type Cond =
  | { type: 'ok' | 'error'; step: number }
  | { type: 'not'; cond: Cond }
  | { type: 'and' | 'or'; conds: Cond[] }
  | { type: 'is_autocommit' };

type StreamRequest =
  | { type: 'close' }
  | { type: 'execute'; stmt: Stmt }
  | { type: 'batch'; batch: { steps: Array<{ condition?: Cond; stmt: Stmt }> } }
  | { type: 'sequence'; sql?: string; sql_id?: number }
  | { type: 'store_sql'; sql_id: number; sql: string }
  | { type: 'close_sql'; sql_id: number }
  | { type: 'get_autocommit' };

interface Stream {
  db: Database.Database;
  sqls: Map<number, string>;
  timer: NodeJS.Timeout;
}

class HranaError extends Error {
  readonly code: string | undefined;
  constructor(message: string, code?: string) {
    super(message);
    this.code = code;
  }
}

const STREAM_IDLE_MS = 10_000;

function toJs(v: HranaValue): unknown {
  switch (v.type) {
    case 'null':
      return null;
    case 'integer':
      return BigInt(v.value);
    case 'float':
      return v.value;
    case 'text':
      return v.value;
    case 'blob':
      return Buffer.from(v.base64, 'base64');
  }
}

function toHrana(v: unknown): HranaValue {
  if (v === null || v === undefined) return { type: 'null' };
  if (typeof v === 'bigint') return { type: 'integer', value: v.toString() };
  if (typeof v === 'number') return Number.isInteger(v) ? { type: 'integer', value: String(v) } : { type: 'float', value: v };
  if (typeof v === 'string') return { type: 'text', value: v };
  if (v instanceof Uint8Array) return { type: 'blob', base64: Buffer.from(v).toString('base64') };
  throw new HranaError(`cannot encode a ${typeof v}`);
}

function execute(stream: Stream, stmt: Stmt) {
  const sql = stmt.sql ?? (stmt.sql_id !== undefined ? stream.sqls.get(stmt.sql_id) : undefined);
  if (sql === undefined) throw new HranaError('statement has no SQL');
  let prepared;
  try {
    prepared = stream.db.prepare(sql);
    prepared.safeIntegers(true);
    const named = Object.fromEntries((stmt.named_args ?? []).map((a) => [a.name.replace(/^[:@$]/, ''), toJs(a.value)]));
    const params = [...(stmt.args ?? []).map(toJs), ...(Object.keys(named).length > 0 ? [named] : [])];
    if (prepared.reader) {
      const cols = prepared.columns().map((c) => ({ name: c.name, decltype: c.type ?? null }));
      const rows = (prepared.raw(true).all(...params) as unknown[][]).map((row) => row.map(toHrana));
      return { cols, rows: stmt.want_rows === false ? [] : rows, affected_row_count: 0, last_insert_rowid: null };
    }
    const info = prepared.run(...params);
    return { cols: [], rows: [], affected_row_count: Number(info.changes), last_insert_rowid: String(info.lastInsertRowid) };
  } catch (e) {
    if (e instanceof HranaError) throw e;
    const err = e as { message?: string; code?: string };
    throw new HranaError(err.message ?? String(e), err.code);
  }
}

function holds(cond: Cond | undefined, outcomes: Array<'ok' | 'error' | undefined>, stream: Stream): boolean {
  if (!cond) return true;
  switch (cond.type) {
    case 'ok':
    case 'error':
      return outcomes[cond.step] === cond.type;
    case 'not':
      return !holds(cond.cond, outcomes, stream);
    case 'and':
      return cond.conds.every((c) => holds(c, outcomes, stream));
    case 'or':
      return cond.conds.some((c) => holds(c, outcomes, stream));
    case 'is_autocommit':
      return !stream.db.inTransaction;
  }
}

const errorOf = (e: unknown) => (e instanceof HranaError ? { message: e.message, ...(e.code ? { code: e.code } : {}) } : { message: String(e) });

function handle(stream: Stream, request: StreamRequest): unknown {
  switch (request.type) {
    case 'close':
      return { type: 'close' };
    case 'execute':
      return { type: 'execute', result: execute(stream, request.stmt) };
    case 'batch': {
      const outcomes: Array<'ok' | 'error' | undefined> = [];
      const step_results: unknown[] = [];
      const step_errors: unknown[] = [];
      for (const [i, step] of request.batch.steps.entries()) {
        step_results.push(null);
        step_errors.push(null);
        if (!holds(step.condition, outcomes, stream)) continue;
        try {
          step_results[i] = execute(stream, step.stmt);
          outcomes[i] = 'ok';
        } catch (e) {
          step_errors[i] = errorOf(e);
          outcomes[i] = 'error';
        }
      }
      return { type: 'batch', result: { step_results, step_errors } };
    }
    case 'sequence': {
      const sql = request.sql ?? (request.sql_id !== undefined ? stream.sqls.get(request.sql_id) : undefined);
      if (sql === undefined) throw new HranaError('sequence has no SQL');
      try {
        stream.db.exec(sql);
      } catch (e) {
        const err = e as { message?: string; code?: string };
        throw new HranaError(err.message ?? String(e), err.code);
      }
      return { type: 'sequence' };
    }
    case 'store_sql':
      stream.sqls.set(request.sql_id, request.sql);
      return { type: 'store_sql' };
    case 'close_sql':
      stream.sqls.delete(request.sql_id);
      return { type: 'close_sql' };
    case 'get_autocommit':
      return { type: 'get_autocommit', is_autocommit: !stream.db.inTransaction };
  }
}

async function body(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of req) parts.push(chunk as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

export interface HranaServer {
  /** `http://127.0.0.1:PORT`: a LIBSQL_URL for `@libsql/client`. */
  url: string;
  /** The token clients must send (LIBSQL_AUTH_TOKEN). */
  authToken: string;
  stop(): Promise<void>;
}

/** Serves the SQLite file at `path` over Hrana on 127.0.0.1, requiring `Bearer <authToken>`. */
export async function startHranaServer(path: string): Promise<HranaServer> {
  const authToken = randomUUID();
  const streams = new Map<string, Stream>();
  const closeStream = (baton: string) => {
    const stream = streams.get(baton);
    if (!stream) return;
    clearTimeout(stream.timer);
    streams.delete(baton);
    stream.db.close();
  };
  const server: Server = createServer(async (req, res) => {
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (req.headers.authorization !== `Bearer ${authToken}`) return json(401, { message: 'unauthorized' });
    if (req.method === 'GET' && req.url === '/v2') return json(200, {});
    if (req.method !== 'POST' || req.url !== '/v2/pipeline') return json(404, { message: 'not found' });
    let pipeline: { baton?: string | null; requests: StreamRequest[] };
    try {
      pipeline = JSON.parse(await body(req)) as typeof pipeline;
    } catch {
      return json(400, { message: 'invalid JSON' });
    }
    let baton = pipeline.baton ?? undefined;
    let stream = baton !== undefined ? streams.get(baton) : undefined;
    if (baton !== undefined && !stream) return json(400, { message: 'unknown or expired baton' });
    if (!stream) {
      const db = new Database(path);
      db.exec('PRAGMA busy_timeout = 5000');
      stream = { db, sqls: new Map(), timer: setTimeout(() => {}, 0) };
    } else {
      clearTimeout(stream.timer);
      streams.delete(baton!);
    }
    const results = [];
    let closed = false;
    for (const request of pipeline.requests) {
      try {
        results.push({ type: 'ok', response: handle(stream, request) });
      } catch (e) {
        results.push({ type: 'error', error: errorOf(e) });
      }
      if (request.type === 'close') closed = true;
    }
    if (closed) {
      stream.db.close();
      baton = undefined;
    } else {
      baton = randomUUID();
      const id = baton;
      stream.timer = setTimeout(() => closeStream(id), STREAM_IDLE_MS);
      streams.set(id, stream);
    }
    json(200, { baton: baton ?? null, base_url: null, results });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    authToken,
    async stop() {
      for (const baton of [...streams.keys()]) closeStream(baton);
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
