// Loaded into hangard by bench/soak (node --expose-gc --import this file): every
// HANGAR_BENCH_MEMORY_INTERVAL_MS it runs two full collections and appends process.memoryUsage() to
// HANGAR_BENCH_MEMORY_FILE, one JSON line per sample. What hangard still holds after a full collection
// is what a leak would grow; the RSS is recorded too. Only the soak bench loads it, never hangard itself.
import { appendFileSync } from 'node:fs';

const file = process.env.HANGAR_BENCH_MEMORY_FILE;
const intervalMs = Number(process.env.HANGAR_BENCH_MEMORY_INTERVAL_MS ?? '10000');
const gc = /** @type {(() => void) | undefined} */ (globalThis.gc);

if (file && gc && intervalMs > 0) {
  const sample = () => {
    gc();
    gc();
    const m = process.memoryUsage();
    appendFileSync(
      file,
      `${JSON.stringify({ at: Date.now(), rss: m.rss, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers })}\n`,
    );
  };
  setInterval(sample, intervalMs).unref();
}
