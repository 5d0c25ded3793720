import assert from 'node:assert/strict';

/** Integration tests with real containers need root; elsewhere they are skipped with this reason. */
export const NEEDS_ROOT =
  process.getuid?.() === 0 ? false : 'needs root (OCI containers, network namespaces, overlay mounts)';

// biome-ignore lint/suspicious/noExplicitAny: API bodies are inspected field by field.
export type Json = any;

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Calls `probe` until it returns a value; fails the test naming `what` after `timeoutMs`. */
export async function pollUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(intervalMs);
  }
}
