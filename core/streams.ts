// Small stream helpers shared by the adapters and the cache.

/** A byte stream pulled from an async generator: one piece per pull, so the reader sets the pace. */
export function streamOf(pieces: AsyncGenerator<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const { value, done } = await pieces.next();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    async cancel(reason) {
      await pieces.return(reason);
    },
  });
}
