// The Worker isolate's own memory, read over DevTools (CDP `Runtime.getHeapUsage`): the V8
// heap, the embedder (C++) heap and the ArrayBuffer backing stores that stream chunks live
// in. That sum is what the production isolate limit (128 MB) is about; the workerd
// process RSS is not (it holds the runtime, Miniflare's services and kernel buffers too).
//
// Two peaks: `peak` is the largest sum seen, garbage included (V8 lets tens of MB of dead
// ArrayBuffers pile up before external memory pressure starts a GC); `livePeak` is the
// largest sum right after a full GC forced every `gcEveryMs` (`HeapProfiler.collectGarbage`),
// i.e. what the isolate holds on to. Not more often: a forced GC also flushes compiled
// code, and every 500 ms it slowed pure-JS decompression fifty-fold (every 2 s: by 20%).

export interface HeapUsage {
  usedSize: number;
  embedderHeapUsedSize?: number;
  backingStorageSize?: number;
}

export interface IsolateMemory {
  /** The largest sample so far, dead objects included, in bytes. */
  peak(): number;
  /** The largest sample taken right after a forced full GC, in bytes. */
  livePeak(): number;
  /** Both peaks in MB, for messages. */
  describe(): string;
  /** Describes the peaks so far and starts both afresh (one inspector client can watch phases). */
  mark(): string;
  stop(): Promise<void>;
}

const total = (u: HeapUsage) => u.usedSize + (u.embedderHeapUsedSize ?? 0) + (u.backingStorageSize ?? 0);
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

/** Samples the isolate behind `inspectorUrl` (a `LocalWorker.inspectorUrl`) until stopped. */
export async function watchIsolateMemory(inspectorUrl: URL, options: { everyMs?: number; gcEveryMs?: number } = {}): Promise<IsolateMemory> {
  const { everyMs = 10, gcEveryMs = 2000 } = options;
  const targets = (await (await fetch(new URL('/json', inspectorUrl.href.replace(/^ws/, 'http')))).json()) as Array<{ webSocketDebuggerUrl: string }>;
  if (!targets[0]) throw new Error(`no inspector target at ${inspectorUrl.href}`);
  // wrangler's inspector proxy wants a loopback Origin from clients that send a User-Agent.
  const ws = new WebSocket(targets[0].webSocketDebuggerUrl, { headers: { Origin: 'http://127.0.0.1' } } as unknown as string[]);
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`cannot open the inspector at ${targets[0]!.webSocketDebuggerUrl}`));
  });
  let next = 0;
  const waiting = new Map<number, (result: unknown) => void>();
  ws.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: unknown };
    if (message.id !== undefined) waiting.get(message.id)?.(message.result), waiting.delete(message.id);
  };
  ws.onclose = () => {
    for (const resolve of waiting.values()) resolve(undefined);
    waiting.clear();
  };
  // A call that gets no answer in time counts as no sample, so a stuck inspector cannot
  // hang the caller.
  const CALL_TIMEOUT_MS = 10_000;
  const call = <T>(method: string) =>
    new Promise<T | undefined>((resolve) => {
      const id = ++next;
      const timer = setTimeout(() => (waiting.delete(id), resolve(undefined)), CALL_TIMEOUT_MS);
      waiting.set(id, (result) => (clearTimeout(timer), resolve(result as T | undefined)));
      ws.send(JSON.stringify({ id, method }));
    });
  const sample = () => call<HeapUsage>('Runtime.getHeapUsage');

  const first = await sample();
  if (!first) throw new Error('the inspector did not answer Runtime.getHeapUsage');
  let peak = total(first);
  let livePeak = 0;
  let stopped = false;
  const loop = (async () => {
    let lastGc = performance.now();
    while (!stopped && ws.readyState === WebSocket.OPEN) {
      const forced = performance.now() - lastGc >= gcEveryMs;
      if (forced) (await call('HeapProfiler.collectGarbage')), (lastGc = performance.now());
      const usage = await sample();
      if (usage) {
        const now = total(usage);
        peak = Math.max(peak, now);
        if (forced) livePeak = Math.max(livePeak, now);
      }
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  const describe = () => `peak ${mb(peak)} with garbage, ${mb(livePeak)} live after forced GCs`;
  return {
    peak: () => peak,
    livePeak: () => livePeak,
    describe,
    mark() {
      const text = describe();
      peak = 0;
      livePeak = 0;
      return text;
    },
    async stop() {
      stopped = true;
      ws.close();
      for (const resolve of waiting.values()) resolve(undefined);
      waiting.clear();
      await loop;
    },
  };
}
