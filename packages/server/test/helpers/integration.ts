import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import net from 'node:net';

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

/** A successful Machines API call's body; anything but 2xx fails the test with the answer. */
export async function ok(
  target: {
    call: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: unknown }>;
  },
  method: string,
  path: string,
  body?: unknown,
): Promise<Json> {
  const response = await target.call(method, path, body);
  assert.ok(
    response.status >= 200 && response.status < 300,
    `${method} ${path}: ${response.status} ${JSON.stringify(response.body)}`,
  );
  return response.body;
}

/** Host processes whose command line mentions `text` (this test process excepted). */
export async function processesMentioning(text: string): Promise<{ pid: number; cmdline: string }[]> {
  const found: { pid: number; cmdline: string }[] = [];
  for (const pid of await readdir('/proc')) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(text)) found.push({ pid: Number(pid), cmdline: cmdline.replaceAll('\0', ' ') });
  }
  return found;
}

/** Mount points at or below `dir`, from /proc/self/mountinfo. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  return text
    .split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point.startsWith(dir));
}

/** Connects from the host to `[address]:port` and reads until the peer closes: its text, or `error <why>`. */
export function readFromHost(address: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: address, port, timeout: 2000 });
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      data += chunk;
    });
    socket.on('end', () => resolve(data.trim()));
    socket.on('timeout', () => socket.destroy(new Error('timeout')));
    socket.on('error', (error) => resolve(`error ${error.message}`));
  });
}
