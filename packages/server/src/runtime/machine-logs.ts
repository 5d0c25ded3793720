import { watch } from 'node:fs';
import { copyFile, open, readFile, stat, truncate } from 'node:fs/promises';

/**
 * A machine's stdout and stderr go straight into `log` (opened O_APPEND by the process that runs the
 * container, so nothing of Hangar's sits in the path and the log survives a hangard restart). The file
 * is kept bounded by rotation: past `maxBytes` it is copied to `log.1` and truncated; appends go on at
 * the new end.
 */
export async function rotateIfLarge(logFile: string, maxBytes: number): Promise<boolean> {
  const size = await stat(logFile).then(
    (s) => s.size,
    () => 0,
  );
  if (size <= maxBytes) return false;
  await copyFile(logFile, `${logFile}.1`);
  await truncate(logFile, 0);
  return true;
}

/** The last `count` lines of the rotated and current files together. */
export async function tailLines(logFile: string, count: number): Promise<string[]> {
  return (await readTail(logFile, count)).lines;
}

/**
 * The last `count` lines, and the offset in the current file where they end: following from exactly
 * there neither repeats nor skips a line written while the tail was read.
 */
export async function readTail(
  logFile: string,
  count: number,
): Promise<{ lines: string[]; endOffset: number }> {
  const current = await readFile(logFile).catch(() => Buffer.alloc(0));
  if (count <= 0) return { lines: [], endOffset: current.length };
  const text = (await readFile(`${logFile}.1`, 'utf8').catch(() => '')) + current.toString('utf8');
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  return { lines: lines.slice(-count), endOffset: current.length };
}

/**
 * Lines appended to the file from byte `offset` on, until `signal` aborts. Notices growth through
 * inotify, with a slow poll as a safety net; a truncation (rotation) restarts reading from the file's start.
 */
export async function* followLines(
  logFile: string,
  signal: AbortSignal,
  from: number,
): AsyncGenerator<string> {
  let offset = from;
  let partial = '';
  let wake: (() => void) | undefined;
  const nudge = () => wake?.();
  const watcher = (() => {
    try {
      return watch(logFile, nudge);
    } catch {
      return undefined;
    }
  })();
  const poll = setInterval(nudge, 1000);
  signal.addEventListener('abort', nudge);
  try {
    while (!signal.aborted) {
      const size = await stat(logFile).then(
        (s) => s.size,
        () => 0,
      );
      if (size < offset) offset = 0;
      if (size > offset) {
        const handle = await open(logFile, 'r');
        try {
          const buffer = Buffer.alloc(size - offset);
          await handle.read(buffer, 0, buffer.length, offset);
          offset = size;
          const lines = (partial + buffer.toString('utf8')).split('\n');
          partial = lines.pop() ?? '';
          for (const line of lines) yield line;
        } finally {
          await handle.close();
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  } finally {
    watcher?.close();
    clearInterval(poll);
    signal.removeEventListener('abort', nudge);
  }
}
