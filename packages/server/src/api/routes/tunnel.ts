import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import type { Principal } from '../../auth/tokens.js';
import type { Platform } from '../../machines/platform.js';
import { ERROR_HTTP_STATUS, HangarError } from '../../shared/errors.js';
import type { ApiRateLimits } from '../rate-limits.js';

/**
 * `GET /v1/apps/{app}/tunnel?host=H&port=P` with `Upgrade: hangar-tunnel`: after `101 Switching Protocols`
 * the connection carries the bytes of one TCP connection into the app's private network (docs/api.md).
 *
 * Upgrades bypass Fastify's hooks (Node hands them to the server's `upgrade` event with the raw socket), so
 * this does the hooks' work itself: the token, its rate limits and refusals, then the platform decides.
 * The destination is dialled before the 101, so every refusal is an ordinary HTTP answer in Fly's shape.
 */

export const TUNNEL_PROTOCOL = 'hangar-tunnel';
const TUNNEL_PATH = /^\/v1\/apps\/([^/?]+)\/tunnel$/;

export function tunnelUpgrades(app: FastifyInstance, platform: Platform, limits: ApiRateLimits): void {
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

  async function handle(request: IncomingMessage, client: Duplex, head: Buffer): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://api');
    const match = TUNNEL_PATH.exec(url.pathname);
    if (!match || request.method !== 'GET') {
      throw new HangarError(
        'not_found',
        `no upgrade endpoint at ${request.method} ${url.pathname}; see docs/api.md`,
      );
    }
    if ((request.headers.upgrade ?? '').toLowerCase() !== TUNNEL_PROTOCOL) {
      throw new HangarError('invalid_argument', `send "Upgrade: ${TUNNEL_PROTOCOL}" to open a tunnel`);
    }
    const appName = decodeURIComponent(match[1]!);
    const host = url.searchParams.get('host') ?? `${appName}.internal`;
    const port = Number(url.searchParams.get('port') ?? '');
    const source = `ip:${request.socket.remoteAddress ?? ''}`;
    let principal: Principal;
    try {
      principal = await platform.tokens.authenticate(request.headers.authorization);
    } catch (error) {
      throw limits.chargeRefusal(source) ?? error;
    }
    limits.checkRefusals(`token:${principal.tokenId}`);
    limits.chargeToken(principal);
    let tunnel: Awaited<ReturnType<Platform['tunnels']['open']>>;
    try {
      tunnel = await platform.tunnels.open(principal, appName, { host, port });
    } catch (error) {
      if (HangarError.is(error) && (error.code === 'forbidden' || error.code === 'unauthorized')) {
        limits.chargeRefusal(`token:${principal.tokenId}`);
      }
      throw error;
    }
    const upstream = tunnel.socket;
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    open.add(client);
    client.write(
      `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_PROTOCOL}\r\n` +
        `Hangar-Tunnel-Address: ${tunnel.address}\r\n\r\n`,
    );
    // The API's idle timeout is for requests; a tunnel lives as long as its two ends (keep-alive probes
    // notice a vanished peer).
    if ('setTimeout' in client) (client as unknown as { setTimeout(ms: number): void }).setTimeout(0);
    upstream.setKeepAlive(true, 30_000);
    if (head.length > 0) upstream.write(head);
    client.pipe(upstream);
    upstream.pipe(client);
    const end = () => {
      open.delete(client);
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
