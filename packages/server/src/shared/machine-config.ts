import { z } from 'zod';
import { parseGoDuration } from './duration.js';
import { parseReference } from './image-reference.js';
import { formatDurationMs, LIMITS } from './limits.js';
import { signalName } from './signals.js';

const isImageReference = (reference: string) => {
  try {
    parseReference(reference);
    return true;
  } catch {
    return false;
  }
};

/**
 * MachineConfig as clients send it (fly-semantics §2). Known fields are checked strictly; fields Hangar
 * does not model are kept as sent (loose objects), as Fly's API does, so newer clients keep working.
 */
const durationWithin = (maxMs: number) =>
  z
    .union([
      z
        .string()
        .max(64)
        .refine((s) => parseGoDuration(s) !== undefined, { message: 'expected a duration such as "10s"' }),
      z.number().int().nonnegative(),
    ])
    .refine((value) => (typeof value === 'number' ? value / 1e6 : (parseGoDuration(value) ?? 0)) <= maxMs, {
      message: `at most ${formatDurationMs(maxMs)}`,
    });
const checkDuration = durationWithin(LIMITS.checkDurationMs);
const str = z.string().max(LIMITS.stringChars, `at most ${LIMITS.stringChars} characters`);
const name = z.string().max(LIMITS.nameChars, `at most ${LIMITS.nameChars} characters`);
const value = z.string().max(LIMITS.valueChars, `at most ${LIMITS.valueChars} characters`);
const list = <T extends z.ZodType>(item: T) =>
  z.array(item).max(LIMITS.listItems, `at most ${LIMITS.listItems} items`);
const boundedRecord = <K extends z.ZodType<string>, V extends z.ZodType>(key: K, item: V) =>
  z.record(key, item).refine((r) => Object.keys(r).length <= LIMITS.mapEntries, {
    message: `at most ${LIMITS.mapEntries} entries`,
  });
const stringMap = boundedRecord(name, value);
const port = z.number().int().min(1).max(65535);

const envName = z
  .string()
  .max(LIMITS.nameChars, `at most ${LIMITS.nameChars} characters`)
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be a valid environment variable name')
  .refine((name) => !name.startsWith('FLY_'), { message: 'FLY_ variables are set by the platform' });

export const MachineGuestSchema = z.looseObject({
  cpu_kind: z.enum(['shared', 'performance']).optional(),
  cpus: z.number().int().min(1).max(64).optional(),
  memory_mb: z.number().int().min(128).max(262144).optional(),
  gpus: z.number().int().min(0).max(8).optional(),
  gpu_kind: name.optional(),
  kernel_args: list(str).optional(),
  max_memory_mb: z.number().int().min(0).max(262144).optional(),
  persist_rootfs: z.boolean().optional(),
});

const httpHeader = z.looseObject({ name, values: list(str) });

const checkBase = {
  type: z.enum(['tcp', 'http']).optional(),
  port: port.optional(),
  interval: checkDuration.optional(),
  timeout: checkDuration.optional(),
  grace_period: checkDuration.optional(),
  method: name.optional(),
  path: str.optional(),
  protocol: z.enum(['http', 'https']).optional(),
  tls_server_name: name.optional(),
  tls_skip_verify: z.boolean().optional(),
  headers: list(httpHeader).optional(),
};
export const MachineCheckSchema = z.looseObject({
  ...checkBase,
  kind: z.enum(['informational', 'readiness']).optional(),
});

/** Inputs accept legacy booleans; responses encode off=false, stop=true, suspend="suspend" (fly-semantics §2). */
const autostop = z.union([z.boolean(), z.enum(['off', 'stop', 'suspend'])]);

const machinePort = z
  .looseObject({
    port: port.optional(),
    start_port: port.optional(),
    end_port: port.optional(),
    handlers: list(z.enum(['http', 'tls', 'pg_tls', 'proxy_proto', 'edge_http'])).optional(),
    force_https: z.boolean().optional(),
    http_options: z.looseObject({}).optional(),
    tls_options: z.looseObject({}).optional(),
    proxy_proto_options: z.looseObject({ version: z.enum(['v1', 'v2']).optional() }).optional(),
  })
  .refine((p) => p.port !== undefined || (p.start_port !== undefined && p.end_port !== undefined), {
    message: 'a port needs `port` or both `start_port` and `end_port`',
  })
  .refine((p) => p.start_port === undefined || p.end_port === undefined || p.start_port <= p.end_port, {
    message: '`start_port` must not be greater than `end_port`',
  });

export const MachineServiceSchema = z
  .looseObject({
    protocol: z.enum(['tcp', 'udp']),
    internal_port: port,
    ports: list(machinePort).optional(),
    concurrency: z
      .looseObject({
        type: z.enum(['connections', 'requests']).optional(),
        soft_limit: z.number().int().min(0).max(1_000_000).optional(),
        hard_limit: z.number().int().min(0).max(1_000_000).optional(),
      })
      .refine(
        (c) => c.soft_limit === undefined || c.hard_limit === undefined || c.soft_limit <= c.hard_limit,
        {
          message: '`soft_limit` must not exceed `hard_limit`',
        },
      )
      .optional(),
    autostart: z.boolean().optional(),
    autostop: autostop.optional(),
    min_machines_running: z.number().int().min(0).max(1000).optional(),
    checks: list(z.looseObject(checkBase)).optional(),
    force_instance_key: name.optional(),
    force_instance_description: str.optional(),
    // Hangar's own service settings (docs/proxy.md): Fly has no equivalent fields.
    /** How long a machine of this service may sit without traffic before autostop takes it. */
    idle_timeout: durationWithin(24 * 3_600_000).optional(),
    /** How long a request may wait for a stopped or suspended machine to wake. */
    wake_timeout: durationWithin(LIMITS.checkDurationMs).optional(),
    /** Requests that never wake a machine: the proxy answers them "asleep" instead. */
    wake_exempt: z.looseObject({ paths: list(str).optional(), user_agents: list(str).optional() }).optional(),
  })
  .refine(
    (s) =>
      !(s.autostart === false && s.autostop !== undefined && s.autostop !== false && s.autostop !== 'off'),
    {
      message:
        'autostop without autostart: the proxy would stop machines it then never starts again; set autostart to true or autostop to "off"',
      path: ['autostop'],
    },
  );

const mount = z.looseObject({
  volume: name.min(1),
  path: str
    .regex(/^\//, 'must be an absolute path')
    .refine((p) => p !== '/', { message: 'cannot mount a volume at /' }),
  name: name.optional(),
  encrypted: z.boolean().optional(),
  size_gb: z.number().int().min(1).max(500).optional(),
  extend_threshold_percent: z.number().int().min(0).max(100).optional(),
  add_size_gb: z.number().int().min(1).max(500).optional(),
  size_gb_limit: z.number().int().min(1).max(500).optional(),
});

const file = z
  .looseObject({
    guest_path: str.regex(/^\//, 'must be an absolute path'),
    raw_value: z.string().base64('must be base64').optional(),
    secret_name: name.optional(),
    image_config: z.string().max(LIMITS.valueChars).optional(),
    mode: z.number().int().min(0).max(0o7777).optional(),
  })
  .refine((f) => [f.raw_value, f.secret_name, f.image_config].filter((v) => v !== undefined).length === 1, {
    message: 'a file needs exactly one of `raw_value`, `secret_name` or `image_config`',
  });

/** Guest presets named by the deprecated `size` field. */
const SIZE_PRESETS: Record<string, { cpu_kind: 'shared' | 'performance'; cpus: number; memory_mb: number }> =
  {};
for (const cpus of [1, 2, 4, 6, 8])
  SIZE_PRESETS[`shared-cpu-${cpus}x`] = { cpu_kind: 'shared', cpus, memory_mb: 256 * cpus };
for (const cpus of [1, 2, 4, 6, 8, 10, 12, 14, 16]) {
  SIZE_PRESETS[`performance-${cpus}x`] = { cpu_kind: 'performance', cpus, memory_mb: 2048 * cpus };
}

const stringList = list(str);

export const MachineConfigSchema = z
  .looseObject({
    image: str
      .trim()
      .min(1, 'an image reference is required, e.g. "registry.example/app:1"')
      .refine(isImageReference, {
        message: 'not a valid image reference; use e.g. "registry.example/app:1" or "app@sha256:<digest>"',
      }),
    env: boundedRecord(envName, value).optional(),
    init: z
      .looseObject({
        exec: stringList.optional(),
        entrypoint: stringList.optional(),
        cmd: stringList.optional(),
        tty: z.boolean().optional(),
        swap_size_mb: z.number().int().min(0).max(262144).optional(),
        kernel_args: stringList.optional(),
      })
      .optional(),
    guest: MachineGuestSchema.optional(),
    size: name
      .refine((name) => name in SIZE_PRESETS, {
        message: `unknown size preset; use one of ${Object.keys(SIZE_PRESETS).join(', ')}`,
      })
      .optional(),
    services: list(MachineServiceSchema).optional(),
    checks: z
      .record(name, MachineCheckSchema)
      .refine((r) => Object.keys(r).length <= LIMITS.listItems, {
        message: `at most ${LIMITS.listItems} checks`,
      })
      .optional(),
    mounts: z.array(mount).max(1, 'a machine mounts at most one volume').optional(),
    restart: z
      .looseObject({
        policy: z.enum(['no', 'always', 'on-failure', 'spot-price']).optional(),
        max_retries: z.number().int().min(0).max(LIMITS.restartMaxRetries).optional(),
      })
      .optional(),
    auto_destroy: z.boolean().optional(),
    metadata: stringMap.optional(),
    files: list(file).optional(),
    stop_config: z
      .looseObject({
        signal: name
          .refine((name) => signalName(name) !== undefined, {
            message: 'unknown signal; use a name such as "SIGTERM"',
          })
          .optional(),
        // One stop holds the machine's queue (and hangard's shutdown) for this long at most.
        timeout: durationWithin(LIMITS.stopTimeoutMs).optional(),
      })
      .optional(),
    dns: z.looseObject({ skip_registration: z.boolean().optional() }).optional(),
    schedule: z.enum(['hourly', 'daily', 'weekly', 'monthly']).optional(),
    standbys: stringList.optional(),
    processes: list(z.looseObject({})).optional(),
    statics: list(z.looseObject({ guest_path: str, url_prefix: str })).optional(),
    metrics: z.looseObject({ port: port.optional(), path: str.optional() }).optional(),
    disable_machine_autostart: z.boolean().optional(),
  })
  .refine((c) => !(c.size !== undefined && c.guest !== undefined), {
    message: '`size` and `guest` are mutually exclusive: send only `guest`',
    path: ['size'],
  });

/** A machine config as a client sends it, after validation. */
export type MachineConfigInput = z.infer<typeof MachineConfigSchema>;
export type MachineGuest = z.infer<typeof MachineGuestSchema>;
export type MachineService = z.infer<typeof MachineServiceSchema>;
export type MachineCheck = z.infer<typeof MachineCheckSchema>;
export type MachineFile = NonNullable<MachineConfigInput['files']>[number];
export type MachineMount = NonNullable<MachineConfigInput['mounts']>[number];
export type RestartPolicy = 'no' | 'always' | 'on-failure' | 'spot-price';

/**
 * Omit for zod's loose objects: the built-in Omit drops every known key of a type that also has an index
 * signature; a key-remapping mapped type keeps them.
 */
type Without<T, K extends PropertyKey> = { [P in keyof T as P extends K ? never : P]: T[P] };

/** A service with its effective autostart and autostop (encoded as old clients decode it). */
export type NormalizedService = Without<MachineService, 'autostop' | 'autostart'> & {
  autostop: boolean | 'suspend';
  autostart: boolean;
};

/**
 * The machine config Hangar stores and returns: what the client sent with Fly's defaults filled in, so
 * every response echoes effective values. It is the one typed config from the API to the orchestrator;
 * the runtime never sees it (it gets the MachineSpec derived from it, machines/machine-spec.ts).
 */
export type MachineConfig = Without<MachineConfigInput, 'size' | 'guest' | 'restart' | 'services' | 'dns'> & {
  guest: MachineGuest & { cpu_kind: 'shared' | 'performance'; cpus: number; memory_mb: number };
  restart: NonNullable<MachineConfigInput['restart']> & { policy: RestartPolicy };
  services?: NormalizedService[];
  dns: NonNullable<MachineConfigInput['dns']>;
};

/** Every default a machine gets when its config leaves a value out: this table and nowhere else. */
export const MACHINE_DEFAULTS = {
  guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
  restartPolicy: 'on-failure',
  /** Fly's restart defaults: up to 10 automatic restarts within 5 minutes. */
  restartMaxRetries: 10,
  restartWindowMs: 5 * 60_000,
  /** Fly's default stop timeout (fly.toml kill_timeout). The signal's default is the image's STOPSIGNAL, else SIGINT. */
  stopTimeoutMs: 5_000,
  stopSignal: 'SIGINT',
  /** Files often carry secrets: readable by the machine's root only, unless the config says otherwise. */
  fileMode: 0o400,
  processGroup: 'app',
} as const;

/**
 * Fills in what Fly fills in, so responses echo effective values (pain point: API defaults differing
 * silently from fly.toml defaults). Returns a new object; the caller's stays untouched.
 */
export function normalizeMachineConfig(config: MachineConfigInput): MachineConfig {
  const { size, guest, restart, services, dns, ...rest } = config;
  const stopSignal = rest.stop_config?.signal;
  return {
    ...rest,
    guest: { ...MACHINE_DEFAULTS.guest, ...(size !== undefined ? SIZE_PRESETS[size] : guest) },
    ...(services
      ? {
          services: services.map((service) => ({
            ...service,
            autostop: encodeAutostop(service.autostop),
            autostart: service.autostart ?? true,
          })),
        }
      : {}),
    restart: { ...restart, policy: restart?.policy ?? MACHINE_DEFAULTS.restartPolicy },
    dns: dns ?? {},
    ...(stopSignal !== undefined
      ? { stop_config: { ...rest.stop_config, signal: signalName(stopSignal) ?? stopSignal } }
      : {}),
  };
}

/** off → false, stop → true, suspend → "suspend": the encoding old clients decode. */
function encodeAutostop(value: boolean | 'off' | 'stop' | 'suspend' | undefined): boolean | 'suspend' {
  if (value === 'suspend') return 'suspend';
  return value === true || value === 'stop';
}
