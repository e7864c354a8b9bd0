/**
 * Concurrent callers asking for the same thing share one call: the first runs it, the
 * others await its result (or its error), and the next caller after it settles runs it
 * again. Per process or isolate: it coalesces the requests one server sees at once (the
 * many clients of a CI fleet asking for one tag), not those of another server.
 */
export class Flights<T> {
  readonly #running = new Map<string, Promise<T>>();

  run(key: string, call: () => Promise<T>): Promise<T> {
    const running = this.#running.get(key);
    if (running) return running;
    const flight = call().finally(() => this.#running.delete(key));
    this.#running.set(key, flight);
    return flight;
  }
}
