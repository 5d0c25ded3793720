import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { HangarError } from '../shared/errors.js';
import type { RegistryPolicy } from '../shared/registry-policy.js';
import { parseHostId } from '../sixpn/address-plan.js';
import { parseCidr } from '../sixpn/cidr.js';
import { DEFAULT_PRIVATE_V4_RANGE, parseIpv4Range } from '../sixpn/ipv4.js';
import { addressInPrefix } from '../sixpn/ipv6.js';
import { DEFAULT_API_LIMITS } from './api-limits.js';
import { DEFAULT_RATE_LIMITS } from './rate-limits.js';

const isCidr = (text: string) => parseCidr(text) !== undefined;

const isIpv4Range = (cidr: string) => {
  try {
    parseIpv4Range(cidr);
    return true;
  } catch {
    return false;
  }
};

const isUsablePrefix = (prefix: string) => {
  try {
    addressInPrefix(prefix, 1);
    return true;
  } catch {
    return false;
  }
};

/**
 * hangard's configuration: defaults, then a JSON file, then HANGAR_* environment variables, then flags.
 * Every key is validated strictly: a typo is an error at start, never a silently ignored setting.
 */
const registryHost = z.string().regex(/^[^/\s@]+$/, 'a registry as host or host:port');
const bucket = z.strictObject({ perSecond: z.number().positive(), burst: z.number().int().min(1) });

export const ConfigSchema = z.strictObject({
  /** Where the database, the secrets key, the token file and (later) images and volumes live. */
  dataDir: z.string().min(1),
  listen: z.strictObject({ host: z.string().min(1), port: z.number().int().min(0).max(65535) }),
  /** The region this host serves; machines and volumes are placed here. */
  region: z.string().regex(/^[a-z][a-z0-9-]{1,15}$/, 'a region is 2-16 lowercase letters, digits or dashes'),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
  /** `auto`: a readable line per request when stdout is a terminal, JSON lines otherwise. */
  logFormat: z.enum(['auto', 'text', 'json']),
  ips: z.strictObject({
    /** The host's public IPv4, shared by every app that allocates `shared_v4`. */
    sharedV4: z.ipv4(),
    /** Dedicated `v6` addresses are carved from this prefix (give the host's routed public /64 here). */
    publicV6Prefix: z
      .string()
      .refine(isUsablePrefix, 'an IPv6 prefix of length 16 to 96, such as 2001:db8:1::/64'),
  }),
  /**
   * `auto`: run machines with the OCI runtime found on this host, or none (machines recorded only) when
   * none works; `required`: refuse to start without one; `off`: never run machines.
   */
  runtime: z.enum(['auto', 'required', 'off']),
  /**
   * Private networks (6PN bridges, nftables isolation, .internal DNS) for machines that run here.
   * `auto`: set them up when the host can (root, a machine runtime, ip and nft), else machines get a
   * loopback-only namespace; `required`: refuse to start without them; `off`: never.
   */
  network: z.strictObject({
    mode: z.enum(['auto', 'required', 'off']),
    /**
     * Machines may open connections to the outside world through the host (masqueraded), each as its
     * app's egress policy allows (on unless the operator sets it). Off: no machine reaches outside.
     */
    egress: z.boolean(),
    /**
     * Local networks machines may reach anyway (CIDRs): the host's interface subnets and the private,
     * link-local and loopback ranges are otherwise never reached by egress.
     */
    egressLocal: z.array(z.string().refine(isCidr, 'a CIDR such as 192.168.1.0/24 or fd00:1::/64')),
    /**
     * Every machine of this host gets one private IPv4 address from this range (the proxy dials it;
     * outbound IPv4 is masqueraded from it). Keep it clear of the host's own networks.
     */
    privateV4Range: z.string().refine(isIpv4Range, 'an IPv4 range /8 to /28 such as 10.213.0.0/16'),
  }),
  /** Hangar's own image registry (on loopback), and which other registries machines may pull from. */
  registry: z.strictObject({
    port: z.number().int().min(1).max(65535),
    /** Other registries (`host:port`) reached over plain HTTP without TLS checks, e.g. a LAN registry. */
    insecure: z.array(registryHost),
    /**
     * Registries allowed whatever address they resolve to (a LAN or loopback registry); public ones
     * need no entry. `host` allows every port of that host, `host:port` one.
     */
    allowed: z.array(registryHost),
    /** Allow registries on private addresses (RFC 1918, unique-local except 6PN, CGNAT). */
    allowPrivate: z.boolean(),
  }),
  /**
   * The proxy: public HTTP on `http` (Host routing to apps with a public IP) and Flycast listeners. It runs
   * only where machines run. `idleStopMs`/`autostopIntervalMs` let tests shorten the idle period.
   */
  proxy: z.strictObject({
    mode: z.enum(['on', 'off']),
    /** `host:port`, `[v6]:port`: where public HTTP is served. */
    http: z.string().refine(isListenAddress, 'an address such as 0.0.0.0:80 or [::]:8080'),
    /** `host:port`, `[v6]:port`: where public HTTPS (TLS terminated by the proxy, SNI) is served; or "off". */
    https: z
      .string()
      .refine((text) => text === 'off' || isListenAddress(text), 'an address such as 0.0.0.0:443, or "off"'),
    /**
     * The operator's certificates, PEM files: each serves the names its certificate covers (a wildcard
     * `*.<domain>` serves every app). Names no certificate covers get a self-signed development
     * certificate kept in the data directory.
     */
    certificates: z.array(z.strictObject({ cert: z.string().min(1), key: z.string().min(1) })).max(1000),
    /** Apps answer at `<app>.<domain>`. */
    domain: z
      .string()
      .regex(
        /^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/,
        'a DNS name such as hangar.localhost',
      ),
    /** Default idle period before autostop, when a service sets none. */
    idleStopMs: z.number().int().min(100),
    /** How often idle machines are looked at. */
    autostopIntervalMs: z.number().int().min(50),
    /** Default wake budget, when a service sets none. */
    wakeTimeoutMs: z.number().int().min(100),
    /** How long a request waits while every machine is at its hard limit, before a 503. */
    queueTimeoutMs: z.number().int().min(0),
    /** Whether fly-replay may send a request to an app of another organization. */
    replayAcrossOrgs: z.boolean(),
  }),
  /** FULL: an acknowledged write survives power loss. NORMAL: faster, survives a crash of hangard. */
  databaseSync: z.enum(['FULL', 'NORMAL']),
  rateLimits: z.strictObject({
    enabled: z.boolean(),
    token: bucket,
    org: bucket,
    machineAction: bucket,
    machineRead: bucket,
    appDelete: bucket,
    refused: bucket,
  }),
  /** Bounds on the API's connections and bodies (config/api-limits.ts). */
  api: z
    .strictObject({
      bodyLimitBytes: z.number().int().min(1024),
      headersTimeoutMs: z.number().int().min(1000),
      requestTimeoutMs: z.number().int().min(1000),
      keepAliveTimeoutMs: z.number().int().min(100),
      idleTimeoutMs: z.number().int().min(61_000, 'longer than a 60 s wait long-poll'),
    })
    .refine((api) => api.headersTimeoutMs <= api.requestTimeoutMs, {
      message: 'headersTimeoutMs cannot exceed requestTimeoutMs',
      path: ['headersTimeoutMs'],
    }),
  /** A machine's two log files together stay under this many bytes (see docs/operations.md, Limits). */
  logs: z.strictObject({
    maxBytesPerMachine: z
      .number()
      .int()
      .min(64 * 1024),
  }),
  /** DNS for machines: names outside .internal/.flycast go to the host's resolvers only when allowed. */
  dns: z.strictObject({
    /** `egress`: forward only while `network.egress` is on; `always`; `never`. */
    forward: z.enum(['egress', 'always', 'never']),
    /** Forwarded queries one network may have waiting for an upstream at once. */
    pendingPerNetwork: z.number().int().min(1).max(65536),
  }),
  /** Per-app quotas; a request past one is refused with 422 naming the quota and this key. */
  quotas: z.strictObject({
    machinesPerApp: z.number().int().min(0),
    volumesPerApp: z.number().int().min(0),
    volumeBytesPerApp: z.number().int().min(0),
    snapshotsPerVolume: z.number().int().min(0),
    /** Distinct images (manifest digests) unpacked on this host for the app's machines. */
    imagesPerApp: z.number().int().min(1),
    /** Their unpacked bytes together. */
    imageBytesPerApp: z.number().int().min(1),
    /** Manifests (distinct digests, tagged or not) in the app's space of Hangar's registry. */
    registryImagesPerApp: z.number().int().min(1),
    /** Bytes of the layers and configs in that space (each blob once), with uploads in progress. */
    registryBytesPerApp: z.number().int().min(1),
  }),
  /** Bounds on one image a pull may bring to this host, whatever app asks for it. */
  images: z.strictObject({
    /** Its layers and config as stored (compressed), as its manifest declares them. */
    maxPullBytes: z.number().int().min(1),
    /** Its root filesystem unpacked. */
    maxUnpackedBytes: z.number().int().min(1),
  }),
  /**
   * Admission against this host: the guest memory and cpus of started and starting machines stay under
   * the host's memory and cpus times these ratios.
   */
  capacity: z.strictObject({
    memoryOvercommit: z.number().positive(),
    cpuOvercommit: z.number().positive(),
  }),
  /** What is pruned from the store, and how often. */
  pruning: z.strictObject({
    intervalSeconds: z.number().int().min(1),
    eventsPerMachine: z.number().int().min(1),
    versionsPerMachine: z.number().int().min(1),
    destroyedRetentionHours: z.number().min(0),
  }),
});

export type ResolvedConfig = z.infer<typeof ConfigSchema> & { hostId: string };

export const DEFAULT_CONFIG: z.infer<typeof ConfigSchema> = {
  dataDir: '/var/lib/hangar',
  listen: { host: '127.0.0.1', port: 4280 }, // 4280: the port of Fly's private Machines API
  region: 'local',
  logLevel: 'info',
  logFormat: 'auto',
  ips: { sharedV4: '127.0.0.1', publicV6Prefix: 'fd68:616e:6761:7200::/64' },
  runtime: 'auto',
  network: { mode: 'auto', egress: true, egressLocal: [], privateV4Range: DEFAULT_PRIVATE_V4_RANGE },
  registry: { port: 4281, insecure: [], allowed: [], allowPrivate: false },
  proxy: {
    mode: 'on',
    http: '0.0.0.0:80',
    https: '0.0.0.0:443',
    certificates: [],
    domain: 'hangar.localhost',
    idleStopMs: 5 * 60_000,
    autostopIntervalMs: 15_000,
    wakeTimeoutMs: 60_000,
    queueTimeoutMs: 10_000,
    replayAcrossOrgs: false,
  },
  databaseSync: 'FULL',
  rateLimits: DEFAULT_RATE_LIMITS,
  api: DEFAULT_API_LIMITS,
  logs: { maxBytesPerMachine: 2 * 1024 * 1024 },
  dns: { forward: 'egress', pendingPerNetwork: 256 },
  quotas: {
    machinesPerApp: 100,
    volumesPerApp: 20,
    volumeBytesPerApp: 1024 * 1024 * 1024 * 1024,
    snapshotsPerVolume: 10,
    imagesPerApp: 20,
    imageBytesPerApp: 32 * 1024 * 1024 * 1024,
    registryImagesPerApp: 200,
    registryBytesPerApp: 20 * 1024 * 1024 * 1024,
  },
  images: { maxPullBytes: 8 * 1024 * 1024 * 1024, maxUnpackedBytes: 16 * 1024 * 1024 * 1024 },
  capacity: { memoryOvercommit: 1.5, cpuOvercommit: 4 },
  pruning: {
    intervalSeconds: 600,
    eventsPerMachine: 100,
    versionsPerMachine: 20,
    destroyedRetentionHours: 24,
  },
};

/**
 * The spellings of Hangar's own registry in image references: its public address on loopback, by
 * number and by name.
 */
export function ownRegistryAddresses(config: Pick<ResolvedConfig, 'registry'>): string[] {
  return [`127.0.0.1:${config.registry.port}`, `localhost:${config.registry.port}`];
}

/** Whether the machines' DNS relays names outside .internal/.flycast to the host's resolvers. */
export function dnsForwards(
  config: Pick<ResolvedConfig, 'dns'> & { network: Pick<ResolvedConfig['network'], 'egress'> },
): boolean {
  return config.dns.forward === 'always' || (config.dns.forward === 'egress' && config.network.egress);
}

/** The pull policy of shared/registry-policy.ts, as this configuration sets it. */
export function registryPolicyOf(config: Pick<ResolvedConfig, 'registry'>): RegistryPolicy {
  return {
    own: ownRegistryAddresses(config),
    // Registries the operator names as plain-HTTP ones are registries the operator allows.
    allowed: [...config.registry.allowed, ...config.registry.insecure],
    allowPrivate: config.registry.allowPrivate,
  };
}

export interface ConfigSources {
  file?: string;
  env?: NodeJS.ProcessEnv;
  overrides?: Record<string, unknown>;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function merge(base: Json, layer: Json): Json {
  const out: Json = { ...base };
  for (const [key, value] of Object.entries(layer)) {
    out[key] = isObject(value) && isObject(base[key]) ? merge(base[key] as Json, value) : value;
  }
  return out;
}

function fromEnv(env: NodeJS.ProcessEnv): Json {
  const layer: Json = {};
  if (env.HANGAR_DATA_DIR) layer.dataDir = env.HANGAR_DATA_DIR;
  if (env.HANGAR_REGION) layer.region = env.HANGAR_REGION;
  if (env.HANGAR_LOG_LEVEL) layer.logLevel = env.HANGAR_LOG_LEVEL;
  if (env.HANGAR_LOG_FORMAT) layer.logFormat = env.HANGAR_LOG_FORMAT;
  if (env.HANGAR_RUNTIME) layer.runtime = env.HANGAR_RUNTIME;
  if (env.HANGAR_NETWORK) layer.network = { mode: env.HANGAR_NETWORK };
  if (env.HANGAR_EGRESS !== undefined) {
    layer.network = {
      ...(layer.network as Json | undefined),
      egress: onOff('HANGAR_EGRESS', env.HANGAR_EGRESS),
    };
  }
  if (env.HANGAR_PROXY) layer.proxy = { mode: env.HANGAR_PROXY };
  if (env.HANGAR_PROXY_HTTP)
    layer.proxy = { ...(layer.proxy as Json | undefined), http: env.HANGAR_PROXY_HTTP };
  if (env.HANGAR_PROXY_HTTPS)
    layer.proxy = { ...(layer.proxy as Json | undefined), https: env.HANGAR_PROXY_HTTPS };
  if (env.HANGAR_API_LISTEN) layer.listen = parseListen(env.HANGAR_API_LISTEN);
  if (env.HANGAR_RATE_LIMITS !== undefined) {
    layer.rateLimits = { enabled: onOff('HANGAR_RATE_LIMITS', env.HANGAR_RATE_LIMITS) };
  }
  return layer;
}

function onOff(name: string, value: string): boolean {
  if (value !== 'on' && value !== 'off')
    throw new HangarError('invalid_argument', `${name} must be "on" or "off", got "${value}"`);
  return value === 'on';
}

/** `host:port`, `[v6]:port` or a bare port. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  if (!match)
    throw new HangarError(
      'invalid_argument',
      `listen address "${text}" is not host:port (e.g. 127.0.0.1:4280)`,
    );
  return { host: match[1] || match[2] || '127.0.0.1', port: Number(match[3]) };
}

function isListenAddress(text: string): boolean {
  try {
    parseListen(text);
    return true;
  } catch {
    return false;
  }
}

export function resolveConfig(sources: ConfigSources = {}): ResolvedConfig {
  let layered: Json = DEFAULT_CONFIG as unknown as Json;
  if (sources.file) {
    let text: string;
    try {
      text = readFileSync(sources.file, 'utf8');
    } catch (error) {
      throw new HangarError(
        'invalid_argument',
        `cannot read config file ${sources.file}: ${(error as Error).message}`,
      );
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      throw new HangarError(
        'invalid_argument',
        `config file ${sources.file} is not valid JSON: ${(error as Error).message}`,
      );
    }
    if (!isObject(parsed))
      throw new HangarError('invalid_argument', `config file ${sources.file} must hold a JSON object`);
    layered = merge(layered, parsed);
  }
  layered = merge(layered, fromEnv(sources.env ?? process.env));
  layered = merge(layered, sources.overrides ?? {});
  const result = ConfigSchema.safeParse(layered);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    throw new HangarError(
      'invalid_argument',
      `invalid configuration at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  return { ...result.data, hostId: hostIdIn(result.data.dataDir) };
}

/**
 * The host's id: 32 random bits, made once and kept in the data directory. It is part of every 6PN
 * address of the machines on this host, so it never changes once machines have addresses.
 */
function hostIdIn(dataDir: string): string {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = join(dataDir, 'host-id');
  let id: string;
  try {
    id = readFileSync(file, 'utf8').trim();
  } catch {
    do id = randomBytes(4).toString('hex');
    while (!isUsableHostId(id));
    writeFileSync(file, `${id}\n`, { mode: 0o600 });
  }
  if (!isUsableHostId(id)) {
    throw new HangarError(
      'invalid_argument',
      `${file} holds "${id}", not a usable host id (8 hex digits, not 00000000 or 00000001)`,
    );
  }
  return id;
}

function isUsableHostId(id: string): boolean {
  try {
    parseHostId(id);
    return true;
  } catch {
    return false;
  }
}
