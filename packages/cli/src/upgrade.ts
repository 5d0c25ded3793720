// HTTP upgrades to hangard's own streaming endpoints (tunnels, consoles): one request that, once the
// server answers 101, leaves a raw two-way byte stream. Not part of the SDK: Fly has no such endpoints.

import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';
import { authorizationHeader } from '@hangar/sdk';
import type { ResolvedConfig } from './context.js';
import { CliError } from './errors.js';

export interface Upgraded {
  socket: Duplex;
  headers: http.IncomingHttpHeaders;
}

/** Sends `GET path` with `Upgrade: protocol`; resolves with the stream, or fails with the server's error. */
export function openUpgrade(config: ResolvedConfig, path: string, protocol: string): Promise<Upgraded> {
  const url = new URL(path, config.apiUrl.endsWith('/') ? config.apiUrl : `${config.apiUrl}/`);
  const headers: Record<string, string> = { connection: 'Upgrade', upgrade: protocol };
  if (config.token) headers.authorization = authorizationHeader(config.token);
  const request = (url.protocol === 'https:' ? https : http).request(url, { method: 'GET', headers });
  return new Promise((resolve, reject) => {
    request.on('upgrade', (response, socket, head) => {
      if (head.length > 0) socket.unshift(head);
      resolve({ socket, headers: response.headers });
    });
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        if (body.length < 64 * 1024) body += chunk;
      });
      response.on('end', () => reject(refusal(response.statusCode ?? 0, body)));
      response.on('error', reject);
    });
    request.on('error', (error) =>
      reject(
        new CliError(
          `cannot reach the API at ${config.apiUrl}: ${error.message}`,
          'is hangard running? check --api-url / HANGAR_API_URL',
        ),
      ),
    );
    request.end();
  });
}

const HINTS: Record<string, string> = {
  unauthorized: 'check the token (hangar auth whoami); read-only tokens cannot open tunnels or consoles',
  forbidden: 'use a token with write access to this app, and a destination in its private network',
  not_found: 'check the app, machine or name (hangar machine list -a APP)',
  unavailable: 'is the machine started and listening? (hangar machine status ID -a APP)',
};

function refusal(status: number, body: string): CliError {
  let message = `the API answered ${status}`;
  let code = '';
  try {
    const parsed = JSON.parse(body) as { error?: string; status?: string };
    if (parsed.error) message = parsed.error;
    code = parsed.status ?? '';
  } catch {
    if (body.trim()) message = `${message}: ${body.trim().slice(0, 200)}`;
  }
  if (status === 404 && code === '') message += ' (does this server support it? it is a Hangar endpoint)';
  return new CliError(message, HINTS[code]);
}
