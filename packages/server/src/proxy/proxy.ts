import http from 'node:http';
import type { Socket } from 'node:net';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { IdleStopResult } from '../machines/machines.js';
import type { Vault } from '../secrets/vault.js';
import { normalizeHostname } from '../shared/certificates.js';
import { parseGoDuration } from '../shared/duration.js';
import { HangarError } from '../shared/errors.js';
import { newUlid } from '../shared/ids.js';
import type { NormalizedService } from '../shared/machine-config.js';
import { MetricsRegistry } from '../shared/metrics.js';
import type { JsonObject } from '../store/records.js';
import type { Store } from '../store/store.js';
import { anyBelowSoft, bucketOf, pickLeastLoaded, preferRegions } from './balancer.js';
import { ReplayableBody } from './body.js';
import { headerList, headerValue, requestHeaders, responseHeaders } from './headers.js';
import { type CheckRecorder, HealthChecks } from './health.js';
import { MachineLoad } from './load.js';
import { errorPage, isProxyFailure, PROXY_ERRORS, type ProxyFailure, proxyFailure } from './proxy-errors.js';
import { type ProxyMetrics, proxyMetrics, statusClass } from './proxy-metrics.js';
import { proxyHeader } from './proxy-protocol.js';
import { pipeRaw } from './raw.js';
import {
  MAX_REPLAY_JSON_BYTES,
  MAX_REPLAYS,
  parseReplayHeader,
  parseReplayJson,
  REPLAY_JSON_TYPE,
  REPLAYABLE_BODY_BYTES,
  type ReplayFallback,
  type ReplayInstruction,
  replayFailed,
  replaySource,
} from './replay.js';
import { type RouteApp, type RouteMachine, RouteTable } from './route-table.js';
import {
  autostopOf,
  concurrencyOf,
  idleTimeoutMs,
  isWakeExempt,
  type PortHandling,
  serviceFor,
  wakeTimeoutMs,
} from './services.js';
import { TlsCertificates } from './tls-certificates.js';
import { neverConnected, UpstreamPools, type UpstreamTarget, upstreamAddress } from './upstream.js';
import { type WakeOrchestrator, Wakes, type WakeTimings } from './wake.js';
import { WebSocketGoAway } from './websocket-close.js';

/**
 * Hangar's proxy (docs/proxy.md): public HTTP routed by Host and public HTTPS routed by SNI and Host to
 * apps with a public address (and their custom hostnames), a listener on every Flycast address for the
 * ports its app exposes with each port's handlers (TLS, HTTP, raw TCP, PROXY protocol), least-loaded
 * balancing with concurrency limits, waking stopped or suspended machines for requests and connections,
 * and stopping idle ones.
 */

export interface ProxyOrchestrator extends WakeOrchestrator, CheckRecorder {
  idleStop(
    machineId: string,
    mode: 'stop' | 'suspend',
    stillIdle: () => string | undefined,
    details?: JsonObject,
  ): Promise<IdleStopResult>;
}

export interface ProxyOptions {
  store: Store;
  orchestrator: ProxyOrchestrator;
  region: string;
  domain: string;
  http: { host: string; port: number };
  /** Public HTTPS (TLS terminated here, certificates by SNI); absent: not served. */
  https?: { host: string; port: number };
  /** Where certificates come from: needed for public HTTPS and for `tls` handlers on Flycast. */
  tls?: { vault: Vault; dataDir: string; files: readonly { cert: string; key: string }[] };
  idleStopMs: number;
  autostopIntervalMs: number;
  wakeTimeoutMs: number;
  /** How long a request waits while every machine is at its hard limit before a 503. */
  queueTimeoutMs?: number;
  /** Requests held during wakes, per app and in total. */
  holdLimits?: { perApp: number; total: number };
  /** Socket inactivity towards a machine before a 504. */
  upstreamTimeoutMs?: number;
  /** Whether fly-replay may name an app of another organization. */
  replayAcrossOrgs?: boolean;
  /** Where the proxy's metrics go (the api serves them at /metrics). */
  metrics?: MetricsRegistry;
  onLog?: (line: string) => void;
  /** Notable events for the operator's log: a machine woken, a machine stopped for being idle. */
  onEvent?: (msg: string, fields: Record<string, string | number | undefined>) => void;
  now?: () => number;
}

/** A listener's view of a connection: public or Flycast, the port it stands for, and whether TLS was ended. */
type Entry = { kind: 'public' | 'flycast'; port: number; tls: boolean };

/** Which port entries a connection may go to: the external port, and the handlers the listener applied. */
interface Lane {
  port: number;
  tls: boolean;
  http: boolean;
}

/** What routing reads of a request; a raw connection has no headers, path or method. */
type RequestInfo = Pick<http.IncomingMessage, 'headers' | 'url' | 'method'>;

/** Where a connection the proxy hands on came from (a wrapped socket may not know its own addresses). */
interface ConnectionInfo {
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** The app of the Flycast address the connection was made to. */
  flycastApp?: RouteApp;
  /** The TLS server name the client sent, if TLS was ended here. */
  servername?: string;
}

const acceptsLane = (lane: Lane) => (h: PortHandling) =>
  h.unsupported === undefined && h.tls === lane.tls && h.http === lane.http;

interface Candidate {
  machine: RouteMachine;
  service: NormalizedService;
  load: number;
  soft: number;
  hard: number;
  region: string;
}

interface Choice {
  machine: RouteMachine;
  service: NormalizedService;
  release: () => void;
  wake?: WakeTimings;
  /** Headers for the app (fly-preferred-instance-unavailable). */
  notes: Record<string, string>;
}

interface RoutingHints {
  force: string | undefined;
  prefer: string | undefined;
  regions: string[];
  wakeBudgetMs: number | undefined;
  /** A replay's `timeout` also bounds the wait at hard limits. */
  queueBudgetMs: number | undefined;
}

/** What a replay asks of the next pick. */
interface ReplayHints {
  force?: string;
  prefer?: string;
  regions?: string[];
  budgetMs?: number;
}

/** One delivery attempt's target: an app, how to pick in it, and headers for the app. */
interface Hop {
  app: RouteApp;
  hints: ReplayHints | undefined;
  excluded: Set<string>;
  extra: Record<string, string>;
  /** A fallback delivery may not replay again. */
  mayReplay: boolean;
  fallback?: { mode: ReplayFallback; machineId: string; app: RouteApp };
}

type Outcome =
  | { kind: 'done' }
  | { kind: 'retry' }
  | { kind: 'replay'; instruction: ReplayInstruction; machine: RouteMachine };

const PUBLIC_HTTP_PORT = 80;
/** Whatever port the HTTPS listener binds, it stands for external port 443. */
const PUBLIC_HTTPS_PORT = 443;
const DEFAULT_HOLD = { perApp: 256, total: 2048 };
/** Attempts on different machines when a connection is refused before any byte was sent. */
const MAX_ATTEMPTS = 3;
const RETRY_AFTER_SEC = 1;
/** A client that has not finished its TLS handshake on a Flycast port by then is dropped. */
const TLS_HANDSHAKE_TIMEOUT_MS = 30_000;
/** A raw connection has no headers, path or method. */
/** An open stream on a machine (a raw connection, an upgraded one): ended before an autostop. */
interface OpenStream {
  /** Ends the client's side gracefully (a WebSocket gets a close frame with 1001). */
  end(): void;
  destroy(): void;
}

const RAW_CONNECTION: RequestInfo = { headers: {}, url: undefined, method: undefined };

export class HangarProxy {
  readonly #options: ProxyOptions;
  readonly #routes: RouteTable;
  readonly #load: MachineLoad;
  readonly #pools = new UpstreamPools();
  readonly #wakes: Wakes;
  readonly #now: () => number;
  #public: http.Server | undefined;
  #secure: tls.Server | undefined;
  #certificates: TlsCertificates | undefined;
  /** HTTP servers that never bind: listeners hand them connections (after TLS, or from Flycast). */
  readonly #lanes = new Map<string, http.Server>();
  /** Connections handed on by the HTTPS and Flycast listeners, closed with the proxy. */
  readonly #sockets = new Set<Duplex>();
  readonly #connections = new WeakMap<object, ConnectionInfo>();
  /** Flycast listeners by port. */
  readonly #flycast = new Map<number, { server: net.Server; bound: boolean }>();
  #flycastRetry: NodeJS.Timeout | undefined;
  /** Machines autostop is taking down: no new requests go to them; a request wakes them after. */
  readonly #draining = new Set<string>();
  readonly #health: HealthChecks;
  readonly #metrics: ProxyMetrics;
  /** Open raw and upgraded connections (WebSockets) per machine: ended before an autostop. */
  readonly #streams = new Map<string, Set<OpenStream>>();
  readonly #seenState = new Map<string, string>();
  /** Per `<app id>:<port>`, whether it redirects to HTTPS: asked per request, kept till the routes change. */
  readonly #forcedHttps = new Map<string, boolean>();
  readonly #held = new Map<string, number>();
  #heldTotal = 0;
  #autostopTimer: NodeJS.Timeout | undefined;
  #autostopRunning: Promise<void> | undefined;
  #unsubscribe: (() => void) | undefined;
  #closed = false;

  constructor(options: ProxyOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#routes = new RouteTable(options.store);
    this.#load = new MachineLoad(this.#now);
    this.#wakes = new Wakes(options.orchestrator, this.#routes, this.#now);
    this.#metrics = proxyMetrics(options.metrics ?? new MetricsRegistry());
    // A check that changes status changes who may take requests: queued requests look again.
    this.#health = new HealthChecks(
      this.#routes,
      options.orchestrator,
      () => this.#load.wakeWaiters(),
      this.#now,
    );
  }

  get routes(): RouteTable {
    return this.#routes;
  }

  /** The public HTTP listener's address (port 0 in the settings picks one). */
  get httpAddress(): { host: string; port: number } | undefined {
    const address = this.#public?.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  /** The public HTTPS listener's address, when it runs. */
  get httpsAddress(): { host: string; port: number } | undefined {
    const address = this.#secure?.address();
    return address && typeof address === 'object' ? { host: address.address, port: address.port } : undefined;
  }

  /** The ports Flycast listeners are up on. */
  flycastPorts(): number[] {
    return [...this.#flycast].filter(([, l]) => l.bound).map(([port]) => port);
  }

  async start(): Promise<void> {
    await this.#routes.start();
    this.#unsubscribe = this.#routes.onChange(() => this.#onRoutesChanged());
    this.#onRoutesChanged();
    const { host, port } = this.#options.http;
    // Whatever port it binds, the public listener stands for external port 80, the port services name
    // for plain HTTP.
    const server = this.#server({ kind: 'public', port: PUBLIC_HTTP_PORT, tls: false });
    await this.#listenOrFail(server, 'proxy.http', host, port);
    this.#public = server;
    // The listener's real port (port 0 picks one) is what Fly-Forwarded-Port reports.
    this.#publicPort = this.httpAddress?.port ?? port;
    if (this.#options.tls) {
      try {
        this.#certificates = await TlsCertificates.load({
          routes: this.#routes,
          vault: this.#options.tls.vault,
          domain: this.#options.domain,
          dataDir: this.#options.tls.dataDir,
          files: this.#options.tls.files,
          onLog: (line) => this.#log(line),
        });
      } catch (error) {
        const badSetting = HangarError.is(error) && error.code === 'invalid_argument';
        if (!badSetting && !this.#options.https) {
          // Without HTTPS the certificates serve only Flycast ports with `tls`: those are then refused.
          this.#log(`TLS is not available: ${(error as Error).message}`);
        } else {
          this.close();
          if (badSetting) throw error;
          const message = `proxy.https: ${(error as Error).message}; or set proxy.https to "off"`;
          throw new HangarError('unavailable', message, { cause: error });
        }
      }
    }
    const https = this.#options.https;
    if (https && this.#certificates) {
      const secure = tls.createServer(
        { ...this.#certificates.defaultPair, SNICallback: this.#certificates.sniCallback },
        (socket) => this.#onPublicTls(socket),
      );
      // A handshake that fails (no certificate for the name, not TLS at all) just closes the connection.
      secure.on('tlsClientError', (_error, socket) => socket.destroy());
      await this.#listenOrFail(secure, 'proxy.https', https.host, https.port);
      this.#secure = secure;
    }
    this.#health.start();
    this.#autostopTimer = setInterval(() => this.runAutostop(), this.#options.autostopIntervalMs);
    this.#autostopTimer.unref();
  }

  #publicPort = 0;

  /** Binds a public listener; a port that is taken stops hangard with an error naming the setting. */
  async #listenOrFail(server: net.Server, setting: string, host: string, port: number): Promise<void> {
    try {
      await listen(server, host, port);
    } catch (error) {
      this.close();
      const code = (error as NodeJS.ErrnoException).code;
      const why =
        code === 'EADDRINUSE'
          ? 'is already in use'
          : code === 'EACCES'
            ? 'needs privileges'
            : 'cannot be used';
      const off = setting === 'proxy.https' ? 'proxy.https to "off"' : 'proxy.mode to "off"';
      throw new HangarError(
        'unavailable',
        `${setting}: ${host}:${port} ${why} (${(error as Error).message}); set ${setting} to a free address or ${off}`,
        { cause: error },
      );
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#autostopTimer);
    clearTimeout(this.#flycastRetry);
    this.#health.close();
    this.#unsubscribe?.();
    this.#routes.close();
    for (const server of [this.#public, ...this.#lanes.values()]) {
      server?.close();
      server?.closeAllConnections();
    }
    this.#secure?.close();
    for (const listener of this.#flycast.values()) listener.server.close();
    for (const socket of this.#sockets) socket.destroy();
    for (const streams of this.#streams.values()) for (const stream of streams) stream.destroy();
    this.#flycast.clear();
    this.#lanes.clear();
    this.#pools.close();
    this.#load.wakeWaiters();
  }

  // ---- listeners ----------------------------------------------------------------------------------

  #server(entry: Entry): http.Server {
    const server = http.createServer((req, res) => {
      void this.#handle(req, res, entry);
    });
    server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      void this.#handleUpgrade(req, socket, head, entry);
    });
    server.on('clientError', (_error, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
    });
    return server;
  }

  #onRoutesChanged(): void {
    this.#forcedHttps.clear();
    for (const machine of this.#allMachines()) {
      const before = this.#seenState.get(machine.id);
      if (before === machine.state) continue;
      this.#seenState.set(machine.id, machine.state);
      // A machine that (re)starts gets a whole idle period before autostop looks at it.
      if (machine.state === 'started') this.#load.touch(machine.id);
      else if (before === 'started') this.#pools.drop(machine.id);
    }
    for (const id of this.#seenState.keys()) {
      if (!this.#routes.machine(id)) {
        this.#seenState.delete(id);
        this.#pools.drop(id);
        this.#load.forget(id);
      }
    }
    this.#syncFlycast();
    // Queued requests look again: a machine may have started or left.
    this.#load.wakeWaiters();
  }

  *#allMachines(): Generator<RouteMachine> {
    for (const app of this.#routes.apps()) yield* app.machines.values();
  }

  /**
   * Adds and removes Flycast listeners to match the table: one `[::]:<port>` listener per port some
   * Flycast address exposes. The Flycast blocks are routed to the host as local (AnyIP), which delivers
   * them to a `::` listener but does not allow binding one address of the block; so each connection is
   * checked against the table when it arrives: only a Flycast address whose app exposes this port gets
   * an answer, anything else (another host address, another app's port) is closed at once.
   */
  #syncFlycast(): void {
    if (this.#closed) return;
    const wanted = new Set(this.#routes.flycastBindings().map((b) => b.port));
    for (const [port, listener] of this.#flycast) {
      if (wanted.has(port)) continue;
      // Open connections stay until they end (or the proxy closes); the port takes no new ones.
      listener.server.close();
      this.#flycast.delete(port);
    }
    for (const port of wanted) {
      if (this.#flycast.has(port)) continue;
      const server = net.createServer((socket) => this.#onFlycast(socket, port));
      const listener = { server, bound: false };
      this.#flycast.set(port, listener);
      listen(server, '::', port, true).then(
        () => {
          if (this.#flycast.get(port) === listener) listener.bound = true;
          else server.close();
        },
        (error: NodeJS.ErrnoException) => {
          if (this.#flycast.get(port) === listener) this.#flycast.delete(port);
          this.#log(`Flycast listener on port ${port}: ${error.message}; retrying`);
          this.#scheduleFlycastRetry();
        },
      );
    }
  }

  // ---- connections: TLS, handlers, hand-off -------------------------------------------------------

  /**
   * A connection to public HTTPS, TLS ended with the certificate of its server name. An app whose port
   * 443 has `tls` without `http` gets the bytes as they are (raw, routed by the server name); everything
   * else is HTTP, routed by Host (which must match the server name).
   */
  #onPublicTls(socket: tls.TLSSocket): void {
    const servername =
      typeof socket.servername === 'string' ? normalizeHostname(socket.servername) : undefined;
    const info: ConnectionInfo = {
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
      ...(servername !== undefined ? { servername } : {}),
    };
    const app = servername === undefined ? undefined : this.#publicApp(servername);
    const rawLane: Lane = { port: PUBLIC_HTTPS_PORT, tls: true, http: false };
    if (app?.isPublic && this.#handlingOf(app, PUBLIC_HTTPS_PORT)?.http === false) {
      void this.#serveRaw(socket, app, rawLane, info);
      return;
    }
    this.#handToHttp(socket, { kind: 'public', port: PUBLIC_HTTPS_PORT, tls: true }, info);
  }

  /** A connection to a Flycast address: only its app's ports, each with the handlers its service names. */
  #onFlycast(socket: Socket, port: number): void {
    const local = socket.localAddress ?? '';
    const flycast = this.#flycastServes(local, port) ? this.#routes.flycast(local) : undefined;
    const app = flycast && this.#routes.app(flycast.appId);
    const handling = app && this.#handlingOf(app, port);
    if (!app || !handling) {
      socket.destroy();
      return;
    }
    const info: ConnectionInfo = {
      remoteAddress: socket.remoteAddress ?? '',
      remotePort: socket.remotePort ?? 0,
      localAddress: local,
      localPort: port,
      flycastApp: app,
    };
    const lane: Lane = { port, tls: handling.tls, http: handling.http };
    const next = (connection: Duplex) => {
      if (lane.http) this.#handToHttp(connection, { kind: 'flycast', port, tls: lane.tls }, info);
      else void this.#serveRaw(connection, app, lane, info);
    };
    if (!handling.tls) {
      next(socket);
      return;
    }
    const certificates = this.#certificates;
    if (!certificates) {
      this.#log(`Flycast port ${port} of app ${app.name} asks for tls, but the proxy has no certificates`);
      socket.destroy();
      return;
    }
    this.#track(socket);
    const secure = new tls.TLSSocket(socket, {
      isServer: true,
      secureContext: certificates.defaultContext,
      SNICallback: certificates.sniCallback,
    });
    const timer = setTimeout(() => secure.destroy(), TLS_HANDSHAKE_TIMEOUT_MS);
    secure.on('error', () => secure.destroy());
    secure.once('secure', () => {
      clearTimeout(timer);
      if (typeof secure.servername === 'string') info.servername = normalizeHostname(secure.servername);
      next(secure);
    });
  }

  /** How the app's machines handle a port (the first service covering it that the proxy can serve). */
  #handlingOf(app: RouteApp, port: number): PortHandling | undefined {
    for (const machine of app.machines.values()) {
      const found = serviceFor(machine.services, port, (h) => h.unsupported === undefined);
      if (found) return found.handling;
    }
    return undefined;
  }

  /** Whether any machine of the app asks for `force_https` on this (plain HTTP) port. */
  #forcesHttps(app: RouteApp, port: number): boolean {
    const key = `${app.id}:${port}`;
    let forced = this.#forcedHttps.get(key);
    if (forced === undefined) {
      const lane = acceptsLane({ port, tls: false, http: true });
      forced = [...app.machines.values()].some(
        (machine) => serviceFor(machine.services, port, lane)?.handling.forceHttps === true,
      );
      this.#forcedHttps.set(key, forced);
    }
    return forced;
  }

  #track(socket: Duplex): void {
    if (this.#sockets.has(socket)) return;
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
  }

  /** Gives a connection (TLS ended, or plain from Flycast) to the HTTP server of its entry. */
  #handToHttp(socket: Duplex, entry: Entry, info: ConnectionInfo): void {
    this.#track(socket);
    this.#connections.set(socket, info);
    const key = `${entry.kind}:${entry.port}:${entry.tls}`;
    let server = this.#lanes.get(key);
    if (!server) {
      server = this.#server(entry);
      // This server never binds a port: listeners hand it connections. Its connection tracking (header
      // and request timeouts, closeAllConnections) starts on 'listening', so that is announced here.
      server.emit('listening');
      this.#lanes.set(key, server);
    }
    server.emit('connection', socket);
  }

  /**
   * A raw connection (no `http` handler): to the least-loaded machine serving the port, waking one if
   * needed as for requests; PROXY header first when the port has `proxy_proto`. The connection counts
   * as one on the machine while it is open, and its bytes are the machine's activity for autostop.
   */
  async #serveRaw(client: Duplex, app: RouteApp, lane: Lane, info: ConnectionInfo): Promise<void> {
    this.#track(client);
    client.on('error', () => undefined);
    const excluded = new Set<string>();
    try {
      for (let attempt = 1; ; attempt++) {
        const choice = await this.#choose(app, lane, RAW_CONNECTION, excluded);
        const { machine, service } = choice;
        const handling = serviceFor(machine.services, lane.port, acceptsLane(lane))?.handling;
        const header =
          handling?.proxyProto === undefined
            ? undefined
            : proxyHeader(
                handling.proxyProto,
                { address: info.remoteAddress, port: info.remotePort },
                { address: info.localAddress, port: info.localPort },
              );
        let streams = this.#streams.get(machine.id);
        if (!streams) {
          streams = new Set();
          this.#streams.set(machine.id, streams);
        }
        streams.add(client);
        const outcome = await pipeRaw(
          client,
          { ...upstreamAddress(machine, service.internal_port), header },
          {
            onActivity: () => this.#load.touch(machine.id),
            onEnd: () => {
              this.#streams.get(machine.id)?.delete(client);
              choice.release();
            },
          },
        );
        if (outcome === 'done') return;
        this.#streams.get(machine.id)?.delete(client);
        choice.release();
        excluded.add(machine.id);
        if (attempt >= MAX_ATTEMPTS) {
          throw proxyFailure('PC01', `machine ${machine.id} refused the connection on its internal port`);
        }
      }
    } catch (error) {
      const failure = isProxyFailure(error) ? error : proxyFailure('PR01', (error as Error).message);
      this.#log(`${failure.code} app=${app.name} connection to port ${lane.port}: ${failure.detail}`);
      client.destroy();
    }
  }

  #flycastServes(localAddress: string, port: number): boolean {
    const flycast = this.#routes.flycast(localAddress);
    if (!flycast) return false;
    return this.#routes.flycastBindings().some((b) => b.ip === localAddress && b.port === port);
  }

  #scheduleFlycastRetry(): void {
    if (this.#closed || this.#flycastRetry) return;
    this.#flycastRetry = setTimeout(() => {
      this.#flycastRetry = undefined;
      this.#syncFlycast();
    }, 500);
    this.#flycastRetry.unref();
  }

  // ---- requests -----------------------------------------------------------------------------------

  #resolveApp(req: http.IncomingMessage, entry: Entry): RouteApp {
    const info = this.#connections.get(req.socket);
    if (entry.kind === 'flycast') {
      const app = info?.flycastApp && this.#routes.app(info.flycastApp.id);
      if (!app) throw proxyFailure('PR01', 'the app of this Flycast address is gone');
      return app;
    }
    const host = normalizeHostname((req.headers.host ?? '').replace(/:\d+$/, ''));
    const suffix = `.${this.#options.domain}`;
    if (entry.tls) {
      // The certificate was chosen by the server name: the request must be for that same name, so a
      // connection made for one app (and verified against its certificate) never reaches another.
      const servername = info?.servername;
      if (servername === undefined && !host.endsWith(suffix)) {
        throw proxyFailure(
          'PT01',
          `a request for "${host}" over TLS must send that name as the TLS server name (SNI)`,
        );
      }
      if (servername !== undefined && servername !== host) {
        throw proxyFailure('PT01', `the TLS server name "${servername}" and the Host "${host}" differ`);
      }
    }
    const app = this.#publicApp(host);
    if (!app) {
      throw proxyFailure(
        'PH01',
        `no app answers for host "${host}"; apps answer at <app>${suffix} and at their custom hostnames`,
      );
    }
    if (!app.isPublic) {
      throw proxyFailure('PH02', `app ${app.name} has no public address; allocate one (v6 or shared_v4)`);
    }
    return app;
  }

  /** The app a public name belongs to: `<app>.<domain>`, or a custom hostname. */
  #publicApp(host: string): RouteApp | undefined {
    const suffix = `.${this.#options.domain}`;
    if (host.endsWith(suffix)) {
      const name = host.slice(0, -suffix.length);
      return name && !name.includes('.') ? this.#routes.appByName(name) : undefined;
    }
    return this.#routes.appByHostname(host);
  }

  #listenerPort(entry: Entry): number {
    if (entry.kind === 'flycast') return entry.port;
    return entry.tls ? PUBLIC_HTTPS_PORT : this.#publicPort;
  }

  /** The PROXY header for an HTTP connection to a machine, when its port has `proxy_proto` with `http`. */
  #proxyHeaderFor(socket: Socket, choice: Choice, entry: Entry): Buffer | undefined {
    const lane = laneOf(entry);
    const version = serviceFor([choice.service], lane.port, acceptsLane(lane))?.handling.proxyProto;
    if (version === undefined) return undefined;
    const info = this.#connections.get(socket);
    return proxyHeader(
      version,
      {
        address: info?.remoteAddress ?? socket.remoteAddress ?? '',
        port: info?.remotePort ?? socket.remotePort ?? 0,
      },
      {
        address: info?.localAddress ?? socket.localAddress ?? '',
        port: info?.localPort ?? socket.localPort ?? 0,
      },
    );
  }

  #clientIp(socket: Socket): string {
    return unmapped(this.#connections.get(socket)?.remoteAddress ?? socket.remoteAddress ?? '');
  }

  /**
   * One request, hop by hop: pick a machine, send, and when its answer asks for a replay, pick again as it
   * says (another app, instance or region) with the kept body, at most MAX_REPLAYS times.
   */
  async #handle(req: http.IncomingMessage, res: http.ServerResponse, entry: Entry): Promise<void> {
    const requestId = newUlid();
    const arrived = this.#now();
    let appName = '-';
    const body = new ReplayableBody(req, REPLAYABLE_BODY_BYTES);
    res.once('finish', () => {
      this.#metrics.requests.inc({ app: appName, class: statusClass(res.statusCode) });
      this.#metrics.latency.observe({ app: appName }, (this.#now() - arrived) / 1000);
    });
    try {
      const firstApp = this.#resolveApp(req, entry);
      appName = firstApp.name;
      if (entry.kind === 'public' && !entry.tls && this.#forcesHttps(firstApp, entry.port)) {
        redirectToHttps(res, req, this.httpsAddress?.port, requestId);
        return;
      }
      let hop: Hop = { app: firstApp, hints: undefined, excluded: new Set(), extra: {}, mayReplay: true };
      for (let replays = 0; ; ) {
        let outcome: Exclude<Outcome, { kind: 'retry' }>;
        try {
          outcome = await this.#deliver(req, res, hop, entry, requestId, body);
        } catch (error) {
          const fallback = hop.fallback;
          if (!fallback || !isProxyFailure(error)) throw error;
          // The replay found no machine in time: back to the replaying machine (or its app), saying why.
          const reason = error.code === 'PM03' || error.code === 'PR04' ? 'timeout' : 'no_candidate';
          hop = {
            app: fallback.app,
            hints:
              fallback.mode === 'force_self' ? { force: fallback.machineId } : { prefer: fallback.machineId },
            excluded: new Set(),
            extra: {
              ...hop.extra,
              'fly-replay-failed': replayFailed({
                ...(hop.hints?.force !== undefined ? { instance: hop.hints.force } : {}),
                app: hop.app.name,
                regions: hop.hints?.regions ?? [],
                source: fallback.machineId,
                reason,
                elapsedMs: this.#now() - arrived,
              }),
            },
            mayReplay: false,
          };
          continue;
        }
        if (outcome.kind === 'done') return;
        replays++;
        if (replays > MAX_REPLAYS) throw proxyFailure('PA02', `more than ${MAX_REPLAYS} chained replays`);
        if (!(await body.complete())) {
          throw proxyFailure(
            'PA01',
            `the request body is over ${REPLAYABLE_BODY_BYTES} bytes and cannot be replayed`,
          );
        }
        hop = this.#replayHop(hop, outcome.instruction, outcome.machine);
      }
    } catch (error) {
      const failure = isProxyFailure(error)
        ? error
        : proxyFailure('PR01', `the proxy failed: ${(error as Error).message}`);
      this.#log(`${failure.code} app=${appName} request=${requestId}: ${failure.detail}`);
      if (res.headersSent) res.destroy();
      else sendFailure(res, failure, requestId);
    }
  }

  /** One hop: pick and send, retrying on another machine while the connection was never made. */
  async #deliver(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    hop: Hop,
    entry: Entry,
    requestId: string,
    body: ReplayableBody,
  ): Promise<Exclude<Outcome, { kind: 'retry' }>> {
    for (let attempt = 1; ; attempt++) {
      const choice = await this.#choose(hop.app, laneOf(entry), req, hop.excluded, hop.hints);
      const outcome = await this.#forward(req, res, choice, entry, requestId, body, hop);
      if (outcome.kind !== 'retry') return outcome;
      hop.excluded.add(choice.machine.id);
      if (attempt >= MAX_ATTEMPTS) {
        throw proxyFailure(
          'PC01',
          `machine ${choice.machine.id} refused the connection on its internal port`,
        );
      }
    }
  }

  /** The next hop a replay instruction asks for; the target app must be in the same org (unless allowed). */
  #replayHop(from: Hop, instruction: ReplayInstruction, machine: RouteMachine): Hop {
    let app = from.app;
    if (instruction.app !== undefined) {
      const target = this.#routes.appByName(instruction.app);
      if (!target)
        throw proxyFailure('PA04', `fly-replay names app "${instruction.app}", which does not exist`);
      if (target.orgId !== from.app.orgId && !this.#options.replayAcrossOrgs) {
        throw proxyFailure('PA05', `fly-replay to app ${target.name} of another organization is not allowed`);
      }
      app = target;
    }
    const excluded = new Set<string>();
    if (instruction.elsewhere) excluded.add(machine.id);
    return {
      app,
      hints: {
        ...(instruction.instance !== undefined ? { force: instruction.instance } : {}),
        ...(instruction.preferInstance !== undefined ? { prefer: instruction.preferInstance } : {}),
        regions: instruction.regions,
        ...(instruction.timeoutMs !== undefined ? { budgetMs: instruction.timeoutMs } : {}),
      },
      excluded,
      extra: {
        'fly-replay-src': replaySource({
          instance: machine.id,
          region: machine.region,
          nowMs: this.#now(),
          ...(instruction.state !== undefined ? { state: instruction.state } : {}),
        }),
      },
      mayReplay: true,
      ...(instruction.fallback !== undefined
        ? { fallback: { mode: instruction.fallback, machineId: machine.id, app: from.app } }
        : {}),
    };
  }

  /** The request's own routing headers on the first hop; a replay's instruction on later hops. */
  #hints(
    req: RequestInfo,
    service: NormalizedService | undefined,
    replay: ReplayHints | undefined,
  ): RoutingHints {
    const serviceBudget = service
      ? wakeTimeoutMs(service, this.#options.wakeTimeoutMs)
      : this.#options.wakeTimeoutMs;
    if (replay) {
      return {
        force: replay.force,
        prefer: replay.prefer,
        regions: replay.regions ?? [],
        wakeBudgetMs:
          replay.budgetMs === undefined ? serviceBudget : Math.min(replay.budgetMs, serviceBudget),
        queueBudgetMs: replay.budgetMs,
      };
    }
    const budget = headerValue(req.headers['hangar-wake-timeout']);
    const askedMs = budget === undefined ? undefined : parseGoDuration(budget);
    return {
      force: headerValue(req.headers['fly-force-instance-id']),
      prefer: headerValue(req.headers['fly-prefer-instance-id']),
      regions: headerList(req.headers['fly-prefer-region']),
      wakeBudgetMs: askedMs === undefined ? serviceBudget : Math.min(askedMs, serviceBudget),
      queueBudgetMs: undefined,
    };
  }

  #usable(machine: RouteMachine): boolean {
    return (
      machine.state === 'started' &&
      !machine.cordoned &&
      machine.privateIp !== null &&
      !this.#draining.has(machine.id) &&
      !this.#health.failing(machine.id)
    );
  }

  #wakeable(machine: RouteMachine, service: NormalizedService): boolean {
    if (!service.autostart || machine.cordoned) return false;
    if (this.#draining.has(machine.id)) return true;
    return ['stopped', 'suspended', 'created', 'stopping', 'suspending'].includes(machine.state);
  }

  /** Picks the machine for a request, waking one or queueing as the rules say; the load is taken. */
  async #choose(
    app: RouteApp,
    lane: Lane,
    req: RequestInfo,
    excluded: Set<string>,
    replay?: ReplayHints,
  ): Promise<Choice> {
    const port = lane.port;
    const serving: { machine: RouteMachine; service: NormalizedService }[] = [];
    for (const machine of app.machines.values()) {
      const service = serviceFor(machine.services, port, acceptsLane(lane))?.service;
      if (service) serving.push({ machine, service });
    }
    if (serving.length === 0) {
      throw proxyFailure('PR01', `app ${app.name} has no machine with ${describeLane(lane)} on port ${port}`);
    }
    const hints = this.#hints(req, serving[0]?.service, replay);
    const deadline = this.#now() + (hints.queueBudgetMs ?? this.#options.queueTimeoutMs ?? 10_000);
    const notes: Record<string, string> = {};
    for (;;) {
      const candidates: Candidate[] = serving
        .filter(({ machine }) => this.#usable(machine) && !excluded.has(machine.id))
        .map(({ machine, service }) => ({
          machine,
          service,
          ...concurrencyOf(service),
          load: this.#load.load(machine.id),
          region: machine.region,
        }));
      if (hints.force !== undefined) {
        const forced = serving.find((s) => s.machine.id === hints.force);
        if (!forced)
          throw proxyFailure('PR02', `machine ${hints.force} does not serve port ${port} of app ${app.name}`);
        const candidate = candidates.find((c) => c.machine.id === hints.force);
        if (candidate && bucketOf(candidate) < 2) return this.#take(candidate, notes);
        if (
          !candidate &&
          this.#wakeable(forced.machine, forced.service) &&
          !excluded.has(forced.machine.id)
        ) {
          return this.#wakeAndTake(app, lane, req, [forced], hints, notes);
        }
        if (!candidate)
          throw proxyFailure(
            'PR02',
            `machine ${hints.force} is ${forced.machine.state} and cannot take requests`,
          );
      } else {
        if (hints.prefer !== undefined) {
          const preferred = candidates.find((c) => c.machine.id === hints.prefer);
          if (preferred && bucketOf(preferred) < 2) return this.#take(preferred, notes);
          notes['fly-preferred-instance-unavailable'] = hints.prefer;
        }
        const pool = preferRegions(candidates, hints.regions);
        if (anyBelowSoft(pool)) return this.#take(pickLeastLoaded(pool)!, notes);
        // Nobody below the soft limit: wake a machine if one can be, else use what is left.
        const wakeable = serving.filter(
          (s) =>
            !excluded.has(s.machine.id) && !this.#usable(s.machine) && this.#wakeable(s.machine, s.service),
        );
        // A raw connection has no path or user agent: wake_exempt is about requests.
        const exempt =
          req.url !== undefined &&
          serving.some((s) => isWakeExempt(s.service, req.url ?? '/', req.headers['user-agent']));
        if (!exempt && (wakeable.length > 0 || this.#wakes.forService(`${app.id}:${port}`).length > 0)) {
          return this.#wakeAndTake(app, lane, req, wakeable, hints, notes);
        }
        const pick = pickLeastLoaded(pool);
        if (pick) return this.#take(pick, notes);
        if (candidates.length === 0) {
          if (exempt)
            throw proxyFailure('PW01', `app ${app.name} is asleep and this request does not wake it`);
          throw proxyFailure(
            'PR01',
            `no machine of app ${app.name} is running, and none can be started for port ${port}`,
          );
        }
      }
      // Every machine is at its hard limit: queue until a slot frees, for a bounded time.
      const left = deadline - this.#now();
      if (left <= 0) {
        throw proxyFailure(
          'PR04',
          `every machine of app ${app.name} stayed at its hard_limit; retry later`,
          RETRY_AFTER_SEC,
        );
      }
      this.#metrics.queueDepth.add({ app: app.name }, 1);
      try {
        await this.#load.waitForSlot(left);
      } finally {
        this.#metrics.queueDepth.add({ app: app.name }, -1);
      }
      if (this.#closed) throw proxyFailure('PR01', 'the proxy is shutting down');
    }
  }

  #take(candidate: Candidate, notes: Record<string, string>): Choice {
    return {
      machine: candidate.machine,
      service: candidate.service,
      release: this.#load.acquire(candidate.machine.id),
      notes,
    };
  }

  /**
   * Holds the request while a machine wakes. Joins a wake in progress of this service while it holds
   * fewer requests than its machine's soft limit; otherwise wakes another machine (suspended ones first:
   * they resume fastest); with none left, shares the least-held wake.
   */
  async #wakeAndTake(
    app: RouteApp,
    lane: Lane,
    req: RequestInfo,
    wakeable: { machine: RouteMachine; service: NormalizedService }[],
    hints: RoutingHints,
    notes: Record<string, string>,
  ): Promise<Choice> {
    const port = lane.port;
    const serviceKey = `${app.id}:${port}`;
    const forced = hints.force !== undefined;
    const active = this.#wakes.forService(serviceKey).filter((w) => !forced || w.machineId === hints.force);
    let wake = forced ? active[0] : active.find((w) => w.held < w.capacity);
    if (!wake) {
      const fresh = wakeable
        .filter((s) => !this.#wakes.get(s.machine.id))
        .sort((a, b) => resumeRank(a.machine) - resumeRank(b.machine));
      const next = fresh[0];
      if (next) {
        wake = this.#wakes.begin(
          next.machine.id,
          next.service,
          serviceKey,
          concurrencyOf(next.service).soft,
          req.method === undefined
            ? { trigger: 'connection', port }
            : { trigger: 'request', method: req.method, path: (req.url ?? '/').slice(0, 200) },
          wakeTimeoutMs(next.service, this.#options.wakeTimeoutMs),
        );
        const asked = this.#now();
        void wake.done.then(
          (timings) => {
            this.#metrics.wakes.inc({ app: app.name, from: timings.previousState });
            this.#metrics.wakeDuration.observe({ app: app.name }, (this.#now() - asked) / 1000);
            this.#options.onEvent?.('wake', {
              app: app.name,
              machine: next.machine.id,
              from: timings.previousState,
              ms: this.#now() - asked,
            });
          },
          () => this.#metrics.wakeFailures.inc({ app: app.name }),
        );
      } else {
        wake = [...active].sort((a, b) => a.held - b.held)[0];
      }
    }
    if (!wake) throw proxyFailure('PR01', `no machine of app ${app.name} can be started`);
    const limits = this.#options.holdLimits ?? DEFAULT_HOLD;
    const heldHere = this.#held.get(app.id) ?? 0;
    if (heldHere >= limits.perApp || this.#heldTotal >= limits.total) {
      throw proxyFailure(
        'PQ01',
        `${heldHere} requests of app ${app.name} already wait for machines to wake`,
        RETRY_AFTER_SEC,
      );
    }
    this.#held.set(app.id, heldHere + 1);
    this.#heldTotal++;
    wake.held++;
    this.#metrics.queueDepth.add({ app: app.name }, 1);
    let timings: WakeTimings;
    try {
      timings = await withBudget(
        wake.done,
        hints.wakeBudgetMs ?? this.#options.wakeTimeoutMs,
        wake.machineId,
      );
    } finally {
      wake.held--;
      this.#heldTotal--;
      this.#metrics.queueDepth.add({ app: app.name }, -1);
      const left = (this.#held.get(app.id) ?? 1) - 1;
      if (left > 0) this.#held.set(app.id, left);
      else this.#held.delete(app.id);
    }
    const machine = this.#routes.machine(wake.machineId);
    const service = machine && serviceFor(machine.services, port, acceptsLane(lane))?.service;
    if (!machine || !service) throw proxyFailure('PR01', `machine ${wake.machineId} went away while waking`);
    return { machine, service, release: this.#load.acquire(machine.id), wake: timings, notes };
  }

  /**
   * Sends the request to the chosen machine and its answer back. 'retry' when the connection failed
   * before any byte went; 'replay' when the answer asks for one (the answer itself is thrown away).
   */
  #forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    choice: Choice,
    entry: Entry,
    requestId: string,
    body: ReplayableBody,
    hop: Hop,
  ): Promise<Outcome> {
    const { machine, service } = choice;
    const address = upstreamAddress(machine, service.internal_port);
    const header = this.#proxyHeaderFor(req.socket, choice, entry);
    const target: UpstreamTarget = {
      machineId: machine.id,
      ...address,
      // A PROXY header speaks for one client's connection: such connections are never shared.
      pooled: concurrencyOf(service).type === 'requests' && header === undefined,
    };
    const readyAt = this.#now();
    const httpVersion = req.httpVersion;
    return new Promise((resolve) => {
      let settled = false;
      const settle = (outcome: Outcome) => {
        if (settled) return;
        settled = true;
        choice.release();
        resolve(outcome);
      };
      const { machineId: _machineId, pooled: _pooled, ...dial } = target;
      const upstream = http.request({
        ...(dial as http.RequestOptions),
        method: req.method,
        path: req.url,
        headers: requestHeaders(req.headers, {
          clientIp: this.#clientIp(req.socket),
          listenerPort: this.#listenerPort(entry),
          tls: entry.tls,
          region: this.#options.region,
          requestId,
          httpVersion,
          extra: { ...hop.extra, ...choice.notes },
        }),
        agent: this.#pools.agentFor(target),
        setHost: false,
        ...(header === undefined
          ? {}
          : {
              // No agent (an agent dials with its own method): this connection, with the PROXY header
              // queued before the request's first byte, so the machine reads the header first.
              agent: undefined,
              createConnection: () => {
                const socket = net.connect(address as net.NetConnectOpts);
                socket.write(header);
                return socket;
              },
            }),
      });
      let connected = false;
      upstream.on('socket', (socket) => {
        const send = () => {
          connected = true;
          body.sendTo(upstream);
        };
        if (socket.connecting) socket.once('connect', send);
        else send();
      });
      upstream.setTimeout(this.#options.upstreamTimeoutMs ?? 60_000, () => {
        upstream.destroy(new HangarError('deadline_exceeded', 'the machine did not answer in time'));
      });
      upstream.on('response', (answer) => {
        if (hop.mayReplay) {
          const header = headerValue(answer.headers['fly-replay']);
          const isJson = String(answer.headers['content-type'] ?? '').startsWith(REPLAY_JSON_TYPE);
          if (header !== undefined || isJson) {
            body.detach();
            void this.#readReplay(answer, header).then(
              (instruction) => settle({ kind: 'replay', instruction, machine }),
              (failure: unknown) => {
                if (!res.headersSent && isProxyFailure(failure)) sendFailure(res, failure, requestId);
                settle({ kind: 'done' });
              },
            );
            return;
          }
        }
        const extra: Record<string, string> = {};
        if (choice.wake) {
          const w = choice.wake;
          const firstByteMs = this.#now() - readyAt;
          extra['fly-wake'] =
            `from=${w.previousState};start=${w.startMs};boot=${w.bootMs};ready=${w.readyMs};first_byte=${firstByteMs}`;
          if (!w.firstByteNoted) {
            w.firstByteNoted = true;
            void this.#options.orchestrator
              .noteProxyEvent(machine.id, 'wake', 'first_byte', {
                first_byte_ms: firstByteMs,
                request_id: requestId,
              })
              .catch(() => undefined);
          }
        }
        res.writeHead(
          answer.statusCode ?? 502,
          answer.statusMessage,
          responseHeaders(answer.headers, { requestId, httpVersion, extra }),
        );
        answer.on('data', () => this.#load.touch(machine.id));
        answer.pipe(res);
        answer.on('error', () => res.destroy());
      });
      upstream.on('error', (error: NodeJS.ErrnoException) => {
        if (settled) return;
        if (neverConnected(error, connected)) {
          settle({ kind: 'retry' });
          return;
        }
        if (!res.headersSent) {
          const failure = HangarError.is(error)
            ? proxyFailure('PC05', `machine ${machine.id} did not answer in time`)
            : proxyFailure('PC01', `machine ${machine.id}: ${error.message}`);
          this.#log(`${failure.code} machine=${machine.id} request=${requestId}: ${failure.detail}`);
          sendFailure(res, failure, requestId);
        } else {
          res.destroy();
        }
        settle({ kind: 'done' });
      });
      res.on('close', () => {
        if (settled) return;
        if (!res.writableFinished) upstream.destroy();
        settle({ kind: 'done' });
      });
      res.on('finish', () => settle({ kind: 'done' }));
    });
  }

  /** The instruction of an answer that asks for a replay (header form, else the JSON body). */
  async #readReplay(answer: http.IncomingMessage, header: string | undefined): Promise<ReplayInstruction> {
    if (header !== undefined) {
      answer.resume();
      return parseReplayHeader(header);
    }
    let text = '';
    for await (const chunk of answer) {
      text += String(chunk);
      if (text.length > MAX_REPLAY_JSON_BYTES) {
        answer.destroy();
        throw proxyFailure('PA03', 'invalid fly-replay: the JSON body is too large');
      }
    }
    return parseReplayJson(text);
  }

  // ---- upgrades (WebSockets) ----------------------------------------------------------------------

  async #handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer, entry: Entry): Promise<void> {
    const requestId = newUlid();
    socket.on('error', () => undefined);
    try {
      const app = this.#resolveApp(req, entry);
      const excluded = new Set<string>();
      for (let attempt = 1; ; attempt++) {
        const choice = await this.#choose(app, laneOf(entry), req, excluded);
        const outcome = await this.#pipeUpgrade(req, socket, head, choice, entry, requestId);
        if (outcome === 'done') return;
        excluded.add(choice.machine.id);
        if (attempt >= MAX_ATTEMPTS)
          throw proxyFailure('PC01', `machine ${choice.machine.id} refused the connection`);
      }
    } catch (error) {
      const failure = isProxyFailure(error) ? error : proxyFailure('PR01', (error as Error).message);
      this.#log(`${failure.code} upgrade request=${requestId}: ${failure.detail}`);
      const body = errorPage(failure, requestId);
      socket.end(
        `HTTP/1.1 ${PROXY_ERRORS[failure.code].status} ${PROXY_ERRORS[failure.code].title}\r\n` +
          `x-hangar-proxy-error: ${failure.code}\r\nfly-request-id: ${requestId}\r\ncontent-type: text/plain\r\n` +
          `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
      );
    }
  }

  #pipeUpgrade(
    req: http.IncomingMessage,
    client: Duplex,
    head: Buffer,
    choice: Choice,
    entry: Entry,
    requestId: string,
  ): Promise<'done' | 'retry'> {
    const { machine, service } = choice;
    const address = upstreamAddress(machine, service.internal_port);
    const header = this.#proxyHeaderFor(req.socket, choice, entry);
    return new Promise((resolve) => {
      const upstream = net.connect(address as net.NetConnectOpts);
      if (header) upstream.write(header);
      let connected = false;
      upstream.once('error', (error: NodeJS.ErrnoException) => {
        if (!connected) {
          choice.release();
          resolve(neverConnected(error, false) ? 'retry' : 'done');
          if (!neverConnected(error, false)) client.destroy();
        }
      });
      upstream.once('connect', () => {
        connected = true;
        const headers = requestHeaders(req.headers, {
          clientIp: this.#clientIp(req.socket),
          listenerPort: this.#listenerPort(entry),
          tls: entry.tls,
          region: this.#options.region,
          requestId,
          httpVersion: req.httpVersion,
          upgrade: true,
          extra: choice.notes,
        });
        let text = `${req.method} ${req.url} HTTP/1.1\r\n`;
        for (const [name, value] of Object.entries(headers)) {
          for (const one of Array.isArray(value) ? value : [value]) text += `${name}: ${one}\r\n`;
        }
        upstream.write(`${text}\r\n`);
        if (head.length > 0) upstream.write(head);
        // Towards the client through a frame follower, so that autostop can say goodbye with a 1001.
        const toClient = new WebSocketGoAway();
        const stream: OpenStream = { end: () => toClient.goAway(), destroy: () => client.destroy() };
        let streams = this.#streams.get(machine.id);
        if (!streams) {
          streams = new Set();
          this.#streams.set(machine.id, streams);
        }
        streams.add(stream);
        const touch = () => this.#load.touch(machine.id);
        client.on('data', touch);
        upstream.on('data', touch);
        client.pipe(upstream);
        upstream.pipe(toClient).pipe(client);
        const end = () => {
          client.destroy();
          upstream.destroy();
          this.#streams.get(machine.id)?.delete(stream);
          choice.release();
        };
        client.once('close', end);
        upstream.once('close', end);
        upstream.on('error', () => undefined);
        resolve('done');
      });
    });
  }

  // ---- autostop -----------------------------------------------------------------------------------

  /**
   * One autostop pass: every started machine of a service with autostop that has had no traffic for its
   * idle period is stopped or suspended, all in the same pass (not one per pass as Fly does), keeping
   * `min_machines_running` of each service running. Returns when the pass is done.
   */
  runAutostop(): Promise<void> {
    this.#autostopRunning ??= this.#autostopPass().finally(() => {
      this.#autostopRunning = undefined;
    });
    return this.#autostopRunning;
  }

  async #autostopPass(): Promise<void> {
    const now = this.#now();
    const work: Promise<unknown>[] = [];
    for (const app of this.#routes.apps()) {
      const groups = new Map<string, { service: NormalizedService; machines: RouteMachine[] }>();
      for (const machine of app.machines.values()) {
        if (machine.state !== 'started' || this.#draining.has(machine.id)) continue;
        const service = machine.services.find((s) => autostopOf(s) !== 'off');
        if (!service) continue;
        const key = `${service.internal_port}`;
        const group = groups.get(key) ?? { service, machines: [] };
        group.machines.push(machine);
        groups.set(key, group);
      }
      for (const { service, machines } of groups.values()) {
        const idleMs = idleTimeoutMs(service, this.#options.idleStopMs);
        const keep = service.min_machines_running ?? 0;
        const idle = machines
          .filter((m) => this.#idleReason(m, idleMs, now) === undefined)
          .sort((a, b) => (this.#load.lastActivity(a.id) ?? 0) - (this.#load.lastActivity(b.id) ?? 0));
        const removable = Math.max(0, machines.length - keep);
        for (const machine of idle.slice(0, removable)) {
          work.push(this.#stopIdle(machine, autostopOf(service) === 'suspend' ? 'suspend' : 'stop', idleMs));
        }
      }
    }
    await Promise.allSettled(work);
  }

  /** Why a machine is not idle (undefined when it is). Open streams with no traffic do not count. */
  #idleReason(machine: RouteMachine, idleMs: number, now: number): string | undefined {
    const streams = this.#streams.get(machine.id)?.size ?? 0;
    if (this.#load.load(machine.id) - streams > 0) return 'requests in flight';
    const last = this.#load.lastActivity(machine.id);
    if (last !== undefined && now - last < idleMs) return 'recent traffic';
    return undefined;
  }

  async #stopIdle(machine: RouteMachine, mode: 'stop' | 'suspend', idleMs: number): Promise<void> {
    this.#draining.add(machine.id);
    try {
      await this.#closeStreams(machine);
      const result = await this.#options.orchestrator.idleStop(
        machine.id,
        mode,
        () => this.#idleReason(machine, idleMs, this.#now()),
        { idle_ms: idleMs, autostop: mode },
      );
      if (!result.done) this.#log(`autostop skipped machine ${machine.id}: ${result.reason}`);
      else {
        const app = this.#routes.app(machine.appId)?.name ?? '-';
        this.#metrics.autostops.inc({ app, mode: result.mode });
        this.#options.onEvent?.('autostop', { app, machine: machine.id, mode: result.mode, idle_ms: idleMs });
      }
    } catch (error) {
      this.#log(`autostop of machine ${machine.id} failed: ${(error as Error).message}`);
    } finally {
      this.#draining.delete(machine.id);
      this.#load.wakeWaiters();
    }
  }

  /** Ends a machine's open streams before it stops, giving them its kill_timeout to finish. */
  async #closeStreams(machine: RouteMachine): Promise<void> {
    const streams = [...(this.#streams.get(machine.id) ?? [])];
    if (streams.length === 0) return;
    for (const stream of streams) stream.end();
    const deadline = this.#now() + (machine.stopTimeoutMs ?? 5_000);
    while ((this.#streams.get(machine.id)?.size ?? 0) > 0 && this.#now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    for (const stream of this.#streams.get(machine.id) ?? []) stream.destroy();
  }

  #log(line: string): void {
    this.#options.onLog?.(`proxy: ${line}`);
  }
}

/** Suspended machines resume fastest; then stopped; then ones still stopping. */
function resumeRank(machine: RouteMachine): number {
  return { suspended: 0, suspending: 1, stopped: 2, created: 2 }[machine.state as string] ?? 3;
}

function withBudget<T>(work: Promise<T>, budgetMs: number, machineId: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(proxyFailure('PM03', `machine ${machineId} did not become ready within ${budgetMs} ms`, 5)),
      budgetMs,
    );
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

function unmapped(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

const laneOf = (entry: Entry): Lane => ({ port: entry.port, tls: entry.tls, http: true });

function describeLane(lane: Lane): string {
  if (lane.http) return lane.tls ? 'a TLS and HTTP service' : 'an HTTP service';
  return lane.tls ? 'a TLS service' : 'a TCP service';
}

/** `force_https`: a 301 to the same URL over HTTPS (the HTTPS listener's port when it is not 443). */
function redirectToHttps(
  res: http.ServerResponse,
  req: http.IncomingMessage,
  httpsPort: number | undefined,
  requestId: string,
): void {
  const host = (req.headers.host ?? '').replace(/:\d+$/, '');
  const port = httpsPort === undefined || httpsPort === PUBLIC_HTTPS_PORT ? '' : `:${httpsPort}`;
  res.writeHead(301, {
    location: `https://${host}${port}${req.url ?? '/'}`,
    'content-length': 0,
    'fly-request-id': requestId,
    server: 'Hangar',
    via: '1.1 hangar',
  });
  res.end();
}

function sendFailure(res: http.ServerResponse, failure: ProxyFailure, requestId: string): void {
  const body = errorPage(failure, requestId);
  const headers: http.OutgoingHttpHeaders = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'x-hangar-proxy-error': failure.code,
    'fly-request-id': requestId,
    server: 'Hangar',
    via: '1.1 hangar',
  };
  if (failure.retryAfterSec !== undefined) headers['retry-after'] = String(failure.retryAfterSec);
  res.writeHead(PROXY_ERRORS[failure.code].status, headers);
  res.end(body);
}

function listen(server: net.Server, host: string, port: number, ipv6Only = false): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => reject(error);
    server.once('error', onError);
    server.listen({ host, port, ipv6Only, exclusive: true }, () => {
      server.off('error', onError);
      resolve();
    });
  });
}
