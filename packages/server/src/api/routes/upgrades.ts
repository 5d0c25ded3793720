import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { Principal } from '../../auth/tokens.js';
import type { Platform } from '../../machines/platform.js';
import { ERROR_HTTP_STATUS, HangarError } from '../../shared/errors.js';
import type { ApiRateLimits } from '../rate-limits.js';
import { parseConsoleQuery, relayConsole } from './console.js';

/**
 * Hangar's upgrade endpoints (docs/api.md): `GET /v1/apps/{app}/tunnel?host=H&port=P` with `Upgrade:
 * hangar-tunnel` (after `101 Switching Protocols` the connection carries the bytes of one TCP connection
 * into the app's private network), and `GET /v1/apps/{app}/machines/{id}/console` with `Upgrade:
 * hangar-console` (an interactive command in the machine, in frames: console.ts).
 *
 * Upgrades bypass Fastify's hooks (Node hands them to the server's `upgrade` event with the raw socket), so
 * this does the hooks' work itself: the token, its rate limits and refusals, then the platform decides.
 * The destination is dialled (the command started) before the 101, so every refusal is an ordinary HTTP answer in Fly's shape.
 */

export const TUNNEL_PROTOCOL = 'hangar-tunnel';
export const CONSOLE_PROTOCOL = 'hangar-console';
const TUNNEL_PATH = /^\/v1\/apps\/([^/?]+)\/tunnel$/;
const CONSOLE_PATH = /^\/v1\/apps\/([^/?]+)\/machines\/([^/?]+)\/console$/;

export function upgradeRoutes(app: FastifyInstance, platform: Platform, limits: ApiRateLimits): void {
  const open = new Set<Duplex>();
  app.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    handle(request, socket, head).catch((error: unknown) => {
      if (!HangarError.is(error) || error.code === 'internal') app.log.error({ err: error }, 'tunnel failed');
      refuse(socket, error);
    });
  });
  app.addHook('onClose', async () => {
    for (const socket of open) socket.destroy();
  });

  async function authenticate(request: IncomingMessage): Promise<Principal> {
    let principal: Principal;
    try {
      principal = await platform.tokens.authenticate(request.headers.authorization);
    } catch (error) {
      throw limits.chargeRefusal(`ip:${request.socket.remoteAddress ?? ''}`) ?? error;
    }
    limits.checkRefusals(`token:${principal.tokenId}`);
    limits.chargeToken(principal);
    return principal;
  }

  /** Runs the platform's check; a refusal counts against the token's allowance of refusals. */
  async function refusable<T>(principal: Principal, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (error) {
      if (HangarError.is(error) && (error.code === 'forbidden' || error.code === 'unauthorized')) {
        limits.chargeRefusal(`token:${principal.tokenId}`);
      }
      throw error;
    }
  }

  function switchProtocols(client: Duplex, protocol: string, headers: Record<string, string> = {}): void {
    open.add(client);
    client.once('close', () => open.delete(client));
    const extra = Object.entries(headers)
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
    client.write(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n${extra}\r\n`,
    );
    // The API's idle timeout is for requests; an upgraded connection lives as long as its two ends.
    if ('setTimeout' in client) (client as unknown as { setTimeout(ms: number): void }).setTimeout(0);
  }

  async function handle(request: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://api');
    const tunnelMatch = TUNNEL_PATH.exec(url.pathname);
    const consoleMatch = CONSOLE_PATH.exec(url.pathname);
    if ((!tunnelMatch && !consoleMatch) || request.method !== 'GET') {
      throw new HangarError(
        'not_found',
        `no upgrade endpoint at ${request.method} ${url.pathname}; see docs/api.md`,
      );
    }
    const protocol = tunnelMatch ? TUNNEL_PROTOCOL : CONSOLE_PROTOCOL;
    if ((request.headers.upgrade ?? '').toLowerCase() !== protocol) {
      throw new HangarError('invalid_argument', `send "Upgrade: ${protocol}" to this endpoint`);
    }
    const principal = await authenticate(request);
    if (consoleMatch) {
      const appName = decodeURIComponent(consoleMatch[1]!);
      const machineId = decodeURIComponent(consoleMatch[2]!);
      const consoleRequest = parseConsoleQuery(url.searchParams);
      const session = await refusable(principal, () =>
        platform.machines.console(principal, appName, machineId, consoleRequest),
      );
      if (client.destroyed) {
        session.kill();
        return;
      }
      switchProtocols(client, CONSOLE_PROTOCOL);
      relayConsole(client, head, session, consoleRequest.tty !== null);
      return;
    }
    const appName = decodeURIComponent(tunnelMatch![1]!);
    const host = url.searchParams.get('host') ?? `${appName}.internal`;
    const port = Number(url.searchParams.get('port') ?? '');
    const tunnel = await refusable(principal, () =>
      platform.tunnels.open(principal, appName, { host, port }),
    );
    const upstream = tunnel.socket;
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    switchProtocols(client, TUNNEL_PROTOCOL, { 'Hangar-Tunnel-Address': tunnel.address });
    // Keep-alive probes notice a vanished peer on an idle tunnel.
    upstream.setKeepAlive(true, 30_000);
    if (head.length > 0) upstream.write(head);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.once('close', end);
    upstream.once('close', end);
    upstream.on('error', end);
  }
}

function refuse(socket: Duplex, error: unknown): void {
  const known = HangarError.is(error) && error.code !== 'internal';
  const status = known ? ERROR_HTTP_STATUS[error.code] : 500;
  const body = JSON.stringify({
    error: known ? error.message : "internal error; the details are in hangard's log",
    status: known ? error.code : 'internal',
  });
  const retry = known && error.retryAfterSec !== undefined ? `Retry-After: ${error.retryAfterSec}\r\n` : '';
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${status < 500 ? 'Refused' : 'Error'}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n${retry}Connection: close\r\n\r\n${body}`,
  );
}
