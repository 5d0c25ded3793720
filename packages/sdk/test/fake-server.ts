// A fake Machines API: a real node:http server on 127.0.0.1, port 0, that records every request and
// answers from a handler. Each test starts its own and closes it through t.after, even when it fails.

import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  url: URL;
  headers: IncomingHttpHeaders;
  /** Parsed JSON body, raw text if not JSON, undefined if empty. */
  body: unknown;
}

export interface Reply {
  status?: number;
  headers?: Record<string, string>;
  /** Objects are sent as JSON, strings as they are. */
  body?: unknown;
  /** Hold the answer this long (for long-poll tests). */
  delayMs?: number;
}

export type Handler = (req: RecordedRequest, index: number) => Reply | Promise<Reply>;

export interface FakeServer {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export async function startFakeServer(t: TestContext, handler: Handler): Promise<FakeServer> {
  const requests: RecordedRequest[] = [];
  // Aborted on close, so a held reply does not keep the test process alive after its test ended.
  const closing = new AbortController();
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = text;
    }
    const url = new URL(req.url ?? '/', 'http://fake');
    const recorded: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      url,
      headers: req.headers,
      body,
    };
    const index = requests.push(recorded) - 1;
    const reply = await handler(recorded, index);
    if (reply.delayMs) await delay(reply.delayMs, closing.signal);
    if (res.destroyed || closing.signal.aborted) return;
    const payload =
      reply.body === undefined
        ? ''
        : typeof reply.body === 'string'
          ? reply.body
          : JSON.stringify(reply.body);
    res.writeHead(reply.status ?? 200, {
      'fly-request-id': `req-${index}`,
      ...(typeof reply.body === 'object' ? { 'content-type': 'application/json' } : {}),
      ...reply.headers,
    });
    res.end(payload);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    closing.abort();
    // Long-poll tests leave requests open on purpose; drop them so close() does not wait for them.
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.after(close);
  return { url: `http://127.0.0.1:${port}`, requests, close };
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Answers with the given replies in order, then repeats the last one. */
export function sequence(...replies: Reply[]): Handler {
  return (_req, index) => replies[Math.min(index, replies.length - 1)] ?? { status: 500 };
}

/** A port that nothing listens on: bind one, then close it. */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
