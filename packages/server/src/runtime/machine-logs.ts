import { watch } from 'node:fs';
import { copyFile, type FileHandle, open, stat, truncate } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';

/**
 * A machine's stdout and stderr reach `log` through the shim's log writer (LOG_WRITER below), never
 * through hangard: the log survives a hangard restart. The writer keeps the machine's logs under a byte
 * cap by rotating itself: it appends at most half the cap to `log`, then renames `log` to `log.1`
 * (replacing the older one) and starts a new `log`. Nothing is copied or truncated, so no line is lost
 * in a race; the two files together never exceed the cap however fast the machine writes.
 *
 * Readers here read in chunks of READ_CHUNK_BYTES: a tail reads backwards from the end, a follow reads
 * forwards only as fast as its consumer takes lines.
 */

/** The unit of every read of a log file. */
export const READ_CHUNK_BYTES = 64 * 1024;
/** A line longer than this is handed out in pieces of this size (a reader never holds more of one). */
export const MAX_LINE_BYTES = 64 * 1024;

/**
 * The log writer, a POSIX shell loop run by the shim with the container's output on its stdin and
 * `$log` and `$half` (half the per-machine cap) set. GNU `head -c N` never reads past N bytes, so the
 * bytes beyond stay in the pipe for the next file; `stdbuf -o0` makes it write each read at once (a
 * machine's last line before a pause would otherwise wait in head's buffer). It ends at end of input
 * (the container is gone).
 */
export const LOG_WRITER =
  'while :; do ' +
  'size=$(stat -c %s "$log" 2>/dev/null || echo 0); ' +
  'if [ "$size" -ge "$half" ]; then mv -f "$log" "$log.1"; size=0; fi; ' +
  'stdbuf -o0 head -c $((half - size)) >> "$log"; ' +
  'after=$(stat -c %s "$log" 2>/dev/null || echo 0); ' +
  'if [ "$after" -lt "$half" ]; then break; fi; ' +
  'done';

/**
 * Copy-and-truncate rotation, for a machine whose shim predates the log writer (it appends to `log`
 * directly): past `maxBytes` the file is copied to `log.1` and emptied.
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

export interface TailResult {
  lines: string[];
  /** Where the lines end in the current file: following from there neither repeats nor skips a line. */
  endOffset: number;
  /** The current file's inode when it was read (a rename by the writer gives a new one). */
  inode: number | undefined;
}

/**
 * The last `count` lines, read backwards from the end in chunks: the current file, then the rotated
 * one if the current holds fewer lines. Memory: the lines returned, plus one chunk.
 */
export async function readTail(logFile: string, count: number): Promise<TailResult> {
  const current = await open(logFile, 'r').catch(() => undefined);
  try {
    const info = current ? await current.stat() : undefined;
    const endOffset = info?.size ?? 0;
    if (count <= 0) return { lines: [], endOffset, inode: info?.ino };
    // The rotated file's end joins the current file's start (the writer may split a line across them).
    const pieces: Buffer[] = [];
    let newlines = 0;
    const take = async (handle: FileHandle, size: number) => {
      let position = size;
      while (position > 0 && newlines <= count) {
        const length = Math.min(READ_CHUNK_BYTES, position);
        position -= length;
        const chunk = Buffer.alloc(length);
        await handle.read(chunk, 0, length, position);
        pieces.unshift(chunk);
        for (const byte of chunk) if (byte === 0x0a) newlines++;
      }
    };
    if (current) await take(current, endOffset);
    if (newlines <= count) {
      const rotated = await open(`${logFile}.1`, 'r').catch(() => undefined);
      if (rotated) {
        try {
          await take(rotated, (await rotated.stat()).size);
        } finally {
          await rotated.close();
        }
      }
    }
    const lines = splitLong(Buffer.concat(pieces).toString('utf8').split('\n'));
    if (lines.at(-1) === '') lines.pop();
    return { lines: lines.slice(-count), endOffset, inode: info?.ino };
  } finally {
    await current?.close();
  }
}

function splitLong(lines: string[]): string[] {
  if (lines.every((line) => line.length <= MAX_LINE_BYTES)) return lines;
  return lines.flatMap((line) => {
    const parts: string[] = [];
    for (let i = 0; i < line.length; i += MAX_LINE_BYTES) parts.push(line.slice(i, i + MAX_LINE_BYTES));
    return parts.length > 0 ? parts : [''];
  });
}

/**
 * Lines appended to the file from byte `offset` on, until `signal` aborts. Reads one chunk at a time and
 * only when the consumer asks for more lines, so a reader that stops reading stops the reading. Growth
 * is noticed through inotify, with a slow poll as a safety net. When the writer rotates (the path names
 * a new file), the old file is read to its end before the new one is read from its start.
 */
export async function* followLines(
  logFile: string,
  signal: AbortSignal,
  from: number,
  fromInode?: number,
): AsyncGenerator<string> {
  let wake: (() => void) | undefined;
  const nudge = () => wake?.();
  const watchFile = () => {
    try {
      return watch(logFile, nudge);
    } catch {
      return undefined;
    }
  };
  let watcher = watchFile();
  const poll = setInterval(nudge, 1000);
  signal.addEventListener('abort', nudge);
  let handle = await open(logFile, 'r').catch(() => undefined);
  let inode = handle ? (await handle.stat()).ino : undefined;
  // The file the tail read was replaced meanwhile: its rest is in log.1, which the tail included.
  let offset = fromInode !== undefined && inode !== fromInode ? 0 : from;
  let partial = '';
  // Keeps a character split across two chunks whole.
  const decoder = new StringDecoder('utf8');
  const chunk = Buffer.alloc(READ_CHUNK_BYTES);
  try {
    while (!signal.aborted) {
      if (handle) {
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, offset);
        if (bytesRead > 0) {
          offset += bytesRead;
          const lines = (partial + decoder.write(chunk.subarray(0, bytesRead))).split('\n');
          partial = lines.pop() ?? '';
          while (partial.length > MAX_LINE_BYTES) {
            lines.push(partial.slice(0, MAX_LINE_BYTES));
            partial = partial.slice(MAX_LINE_BYTES);
          }
          for (const line of lines) {
            if (signal.aborted) return;
            yield line;
          }
          continue;
        }
      }
      // At the end of the open file: has the writer moved on to a new one?
      const now = await stat(logFile).catch(() => undefined);
      if (now && now.ino !== inode) {
        await handle?.close();
        watcher?.close();
        watcher = watchFile();
        handle = await open(logFile, 'r').catch(() => undefined);
        inode = handle ? (await handle.stat()).ino : undefined;
        offset = 0;
        continue;
      }
      if (now && handle && now.size < offset) offset = 0; // truncated in place (an older writer)
      await new Promise<void>((resolve) => {
        wake = resolve;
        if (signal.aborted) resolve();
      });
    }
  } finally {
    watcher?.close();
    clearInterval(poll);
    signal.removeEventListener('abort', nudge);
    await handle?.close();
  }
}
