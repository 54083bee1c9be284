/**
 * Bounds a test's wait: rejects with `<what>: timed out after <ms> ms` unless `p` settles first.
 * The timer is cleared either way, so a finished test leaves nothing on the event loop.
 */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
