// fly.toml → a typed, validated app configuration (fly-semantics §8.1). Everything a deploy needs is
// checked here, before anything is built or changed, and every problem names its line and key. Keys that
// Fly knows but Hangar does not use, and unknown keys, are reported as warnings, not errors: users bring
// their fly.toml from Fly unchanged.

import type {
  Autostop,
  HttpOptions,
  MachineCheck,
  MachineMetrics,
  MachinePort,
  MachineServiceConcurrency,
  ProxyProtoOptions,
  Static,
  TlsOptions,
} from '@hangar/sdk';
import { type KeyPath, parseTomlDocument, pathText } from './document.js';
import { Section } from './section.js';
import { splitCommand } from './units.js';

/** The process group of apps without `[processes]`. */
export const DEFAULT_PROCESS_GROUP = 'app';

export const DEPLOY_STRATEGIES = ['rolling', 'immediate', 'canary', 'bluegreen'] as const;
export type DeployStrategy = (typeof DEPLOY_STRATEGIES)[number];

/** Signals a machine's `stop_config` accepts. */
const SIGNALS = [
  'SIGABRT',
  'SIGALRM',
  'SIGFPE',
  'SIGHUP',
  'SIGILL',
  'SIGINT',
  'SIGKILL',
  'SIGPIPE',
  'SIGQUIT',
  'SIGSEGV',
  'SIGTERM',
  'SIGTRAP',
  'SIGUSR1',
  'SIGUSR2',
];

/** Defaults from Fly's fly.toml reference. */
export const FLY_TOML_DEFAULTS = {
  internalPort: 8080,
  maxUnavailable: 0.33,
  waitTimeoutMs: 5 * 60_000,
  releaseCommandTimeoutMs: 5 * 60_000,
  killTimeoutMaxMs: 300_000,
};

export interface BuildConfig {
  image?: string;
  dockerfile?: string;
  ignorefile?: string;
  target?: string;
  args: Record<string, string>;
}

export interface DeployConfig {
  strategy: DeployStrategy;
  /** A whole number of machines (≥ 1) or a fraction of each group (0 < x < 1). */
  maxUnavailable: number;
  waitTimeoutMs: number;
  releaseCommand?: string[];
  releaseCommandTimeoutMs: number;
  releaseCommandVm?: VmConfig;
}

/** A service as fly.toml declares it, before it is split per process group. */
export interface ServiceConfig {
  protocol: string;
  internalPort: number;
  ports: MachinePort[];
  autostop: Autostop;
  autostart: boolean;
  minMachinesRunning?: number;
  concurrency?: MachineServiceConcurrency;
  checks: MachineCheck[];
  /** Process groups it applies to; empty means all. */
  processes: string[];
}

export interface CheckConfig {
  name: string;
  check: MachineCheck;
  processes: string[];
}

export interface MountConfig {
  source: string;
  destination: string;
  processes: string[];
  initialSizeGb?: number;
  snapshotRetention?: number;
  autoExtendThresholdPercent?: number;
  autoExtendIncrementGb?: number;
  autoExtendLimitGb?: number;
}

export interface VmConfig {
  size?: string;
  memoryMb?: number;
  cpus?: number;
  cpuKind?: string;
  processes: string[];
}

export interface RestartConfig {
  policy: 'always' | 'no' | 'on-failure';
  retries?: number;
  processes: string[];
}

export interface FileConfig {
  guestPath: string;
  rawValue?: string;
  secretName?: string;
  localPath?: string;
  processes: string[];
}

export interface AppConfig {
  app?: string;
  primaryRegion?: string;
  killSignal?: string;
  killTimeoutMs?: number;
  swapSizeMb?: number;
  build: BuildConfig;
  deploy: DeployConfig;
  env: Record<string, string>;
  /** Group name → command words; `{app: []}` (the image's own command) when fly.toml has no [processes]. */
  processes: Record<string, string[]>;
  /** `[http_service]` and `[[services]]` in file order (the http_service first). */
  services: ServiceConfig[];
  checks: CheckConfig[];
  mounts: MountConfig[];
  vms: VmConfig[];
  restarts: RestartConfig[];
  statics: Array<Static & { processes: string[] }>;
  files: FileConfig[];
  metrics?: MachineMetrics;
  experimental: { cmd?: string[]; entrypoint?: string[]; exec?: string[] };
}

export interface ParsedFlyToml {
  config: AppConfig;
  /** `fly.toml line N: key: ...` notes about keys that were ignored. */
  warnings: string[];
}

/** Keys Fly knows that Hangar reads but does not act on (no warning for these). */
const IGNORED_TOP_LEVEL = ['console_command', 'kill_timeout_seconds', 'host_dedication_id'];

const APP_NAME = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
const GROUP_NAME = /^[a-z0-9_-]+$/;

function parseCommand(section: Section, key: string, value: string): string[] {
  const words = splitCommand(value);
  if (!words || words.length === 0) {
    throw section.error(key, words ? 'is empty' : 'has an unclosed quote');
  }
  return words;
}

/** A command written as one string (split like a shell would) or as a list of words. */
function commandValue(section: Section, key: string): string[] | undefined {
  const value = section.values[key];
  if (value === undefined) return undefined;
  if (typeof value === 'string') {
    section.accept(key);
    return parseCommand(section, key, value);
  }
  return section.stringList(key);
}

function readAutostop(section: Section): Autostop {
  const value = section.values.auto_stop_machines;
  section.accept('auto_stop_machines');
  if (value === undefined || value === false || value === 'off') return 'off';
  if (value === true || value === 'stop') return 'stop';
  if (value === 'suspend') return 'suspend';
  throw section.error(
    'auto_stop_machines',
    `must be "off", "stop" or "suspend", got ${JSON.stringify(value)}`,
    'true and false are accepted too, meaning "stop" and "off"',
  );
}

function readConcurrency(section: Section): MachineServiceConcurrency | undefined {
  const c = section.table('concurrency');
  if (!c) return undefined;
  const concurrency: MachineServiceConcurrency = {
    type: c.string('type', { oneOf: ['connections', 'requests'] }) ?? 'connections',
  };
  const soft = c.int('soft_limit', 1);
  const hard = c.int('hard_limit', 1);
  if (soft !== undefined) concurrency.soft_limit = soft;
  if (hard !== undefined) concurrency.hard_limit = hard;
  if (soft !== undefined && hard !== undefined && soft > hard) {
    throw c.error('soft_limit', `(${soft}) must not exceed hard_limit (${hard})`);
  }
  return concurrency;
}

function readHeaders(section: Section): MachineCheck['headers'] {
  const headers = section.table('headers');
  if (!headers) return undefined;
  return Object.keys(headers.values).map((name) => ({
    name,
    values: headers.stringList(name) ?? [],
  }));
}

function durationText(ms: number | undefined): string | undefined {
  if (ms === undefined) return undefined;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** The keys every check has; `type` decides whether the http keys are read. */
function readCheck(section: Section, type: 'tcp' | 'http', port: number | undefined): MachineCheck {
  const check: MachineCheck = { type };
  if (port !== undefined) check.port = port;
  const interval = durationText(section.durationMs('interval'));
  const timeout = durationText(section.durationMs('timeout'));
  const grace = durationText(section.durationMs('grace_period'));
  if (interval) check.interval = interval;
  if (timeout) check.timeout = timeout;
  if (grace) check.grace_period = grace;
  if (type === 'http') {
    check.method = (section.string('method') ?? 'GET').toUpperCase();
    check.path = section.string('path', { pattern: /^\//, hint: 'a path starts with /' }) ?? '/';
    const protocol = section.string('protocol', { oneOf: ['http', 'https'] });
    if (protocol) check.protocol = protocol;
    const skip = section.bool('tls_skip_verify');
    if (skip !== undefined) check.tls_skip_verify = skip;
    const sni = section.string('tls_server_name');
    if (sni) check.tls_server_name = sni;
    const headers = readHeaders(section);
    if (headers) check.headers = headers;
  }
  return check;
}

function passThroughTable<T>(section: Section, key: string): T | undefined {
  const table = section.table(key);
  return table ? (table.values as T) : undefined;
}

function readPort(section: Section): MachinePort {
  const port: MachinePort = {};
  const single = section.int('port', 1, 65535);
  const start = section.int('start_port', 1, 65535);
  const end = section.int('end_port', 1, 65535);
  if (single !== undefined) port.port = single;
  else if (start !== undefined && end !== undefined) {
    if (start > end) throw section.error('start_port', `(${start}) must not exceed end_port (${end})`);
    port.start_port = start;
    port.end_port = end;
  } else {
    throw section.error(undefined, 'needs port, or start_port and end_port');
  }
  const handlers = section.stringList('handlers');
  if (handlers) {
    const unknown = handlers.find((h) => !['http', 'tls', 'pg_tls', 'proxy_proto'].includes(h));
    if (unknown)
      throw section.error('handlers', `unknown handler "${unknown}"`, 'use http, tls, pg_tls or proxy_proto');
    port.handlers = handlers;
  }
  const forceHttps = section.bool('force_https');
  if (forceHttps !== undefined) port.force_https = forceHttps;
  const http = passThroughTable<HttpOptions>(section, 'http_options');
  const tls = passThroughTable<TlsOptions>(section, 'tls_options');
  const proxyProto = passThroughTable<ProxyProtoOptions>(section, 'proxy_proto_options');
  if (http) port.http_options = http;
  if (tls) port.tls_options = tls;
  if (proxyProto) port.proxy_proto_options = proxyProto;
  return port;
}

function readHttpService(section: Section): ServiceConfig {
  const internalPort = section.int('internal_port', 1, 65535) ?? FLY_TOML_DEFAULTS.internalPort;
  const forceHttps = section.bool('force_https') ?? false;
  const http = passThroughTable<HttpOptions>(section, 'http_options');
  const tls = passThroughTable<TlsOptions>(section, 'tls_options');
  // fly-semantics §5.2: port 80 with the http handler, 443 with tls and http.
  const plain: MachinePort = { port: 80, handlers: ['http'], force_https: forceHttps };
  const secure: MachinePort = { port: 443, handlers: ['tls', 'http'] };
  if (http) {
    plain.http_options = http;
    secure.http_options = http;
  }
  if (tls) secure.tls_options = tls;
  const service: ServiceConfig = {
    protocol: 'tcp',
    internalPort,
    ports: [plain, secure],
    autostop: readAutostop(section),
    autostart: section.bool('auto_start_machines') ?? true,
    concurrency: readConcurrency(section),
    checks: section.tables('checks').map((c) => readCheck(c, 'http', c.int('port', 1, 65535))),
    processes: section.stringList('processes') ?? [],
  };
  const min = section.int('min_machines_running', 0);
  if (min !== undefined) service.minMachinesRunning = min;
  section.accept('machine_checks');
  return service;
}

function readService(section: Section): ServiceConfig {
  const internalPort = section.int('internal_port', 1, 65535);
  if (internalPort === undefined) throw section.error(undefined, 'needs internal_port');
  const protocol = section.string('protocol', { oneOf: ['tcp', 'udp'] }) ?? 'tcp';
  const service: ServiceConfig = {
    protocol,
    internalPort,
    ports: section.tables('ports').map(readPort),
    autostop: readAutostop(section),
    autostart: section.bool('auto_start_machines') ?? true,
    concurrency: readConcurrency(section),
    checks: [
      ...section.tables('tcp_checks').map((c) => readCheck(c, 'tcp', c.int('port', 1, 65535))),
      ...section.tables('http_checks').map((c) => readCheck(c, 'http', c.int('port', 1, 65535))),
    ],
    processes: section.stringList('processes') ?? [],
  };
  if (service.ports.length === 0) throw section.error(undefined, 'needs at least one [[services.ports]]');
  const min = section.int('min_machines_running', 0);
  if (min !== undefined) service.minMachinesRunning = min;
  section.accept('machine_checks');
  return service;
}

function readVm(section: Section): VmConfig {
  const vm: VmConfig = { processes: section.stringList('processes') ?? [] };
  const size = section.string('size', {
    pattern: /^(shared-cpu-\d+x|performance-\d+x)$/,
    hint: 'Hangar knows the shared-cpu-Nx and performance-Nx sizes',
  });
  if (size) vm.size = size;
  const memory = section.sizeMb('memory', 'mb') ?? section.sizeMb('memory_mb', 'mb');
  if (memory !== undefined) {
    if (!Number.isInteger(memory)) throw section.error('memory', 'must be a whole number of megabytes');
    vm.memoryMb = memory;
  }
  const cpus = section.int('cpus', 1, 64);
  if (cpus !== undefined) vm.cpus = cpus;
  const kind = section.string('cpu_kind', { oneOf: ['shared', 'performance'] });
  if (kind) vm.cpuKind = kind;
  section.accept('gpus', 'gpu_kind', 'kernel_args', 'host_dedication_id', 'persist_rootfs');
  return vm;
}

function readDeploy(section: Section | undefined): DeployConfig {
  const deploy: DeployConfig = {
    strategy: 'rolling',
    maxUnavailable: FLY_TOML_DEFAULTS.maxUnavailable,
    waitTimeoutMs: FLY_TOML_DEFAULTS.waitTimeoutMs,
    releaseCommandTimeoutMs: FLY_TOML_DEFAULTS.releaseCommandTimeoutMs,
  };
  if (!section) return deploy;
  deploy.strategy =
    (section.string('strategy', {
      oneOf: DEPLOY_STRATEGIES,
    }) as DeployStrategy | undefined) ?? 'rolling';
  const maxUnavailable = section.number('max_unavailable');
  if (maxUnavailable !== undefined) {
    const valid = maxUnavailable >= 1 ? Number.isInteger(maxUnavailable) : maxUnavailable > 0;
    if (!valid) {
      throw section.error(
        'max_unavailable',
        `must be a whole number of machines (1 or more) or a fraction between 0 and 1, got ${maxUnavailable}`,
      );
    }
    deploy.maxUnavailable = maxUnavailable;
  }
  deploy.waitTimeoutMs = section.durationMs('wait_timeout') ?? deploy.waitTimeoutMs;
  const release = section.string('release_command');
  if (release !== undefined) deploy.releaseCommand = parseCommand(section, 'release_command', release);
  deploy.releaseCommandTimeoutMs =
    section.durationMs('release_command_timeout') ?? deploy.releaseCommandTimeoutMs;
  const vm = section.table('release_command_vm');
  if (vm) deploy.releaseCommandVm = readVm(vm);
  return deploy;
}

function readBuild(section: Section | undefined): BuildConfig {
  const build: BuildConfig = { args: {} };
  if (!section) return build;
  build.image = section.string('image');
  build.dockerfile = section.string('dockerfile');
  build.ignorefile = section.string('ignorefile');
  build.target = section.string('build-target') ?? section.string('build_target');
  const args = section.table('args');
  if (args) for (const key of Object.keys(args.values)) build.args[key] = args.scalarText(key) ?? '';
  section.accept('builder', 'buildpacks', 'builtin', 'settings', 'build-secrets');
  if (build.image && build.dockerfile) {
    throw section.error(
      'image',
      'and dockerfile exclude each other',
      'keep image to deploy a built image, or dockerfile to build one',
    );
  }
  return build;
}

/** Checks every `processes = [...]` names a group that exists. */
function checkGroups(config: AppConfig, targets: Array<{ section: Section; processes: string[] }>): void {
  const groups = Object.keys(config.processes);
  for (const { section, processes } of targets) {
    const missing = processes.find((p) => !groups.includes(p));
    if (missing) {
      throw section.error(
        'processes',
        `names process group "${missing}", which [processes] does not define`,
        `the groups are: ${groups.join(', ')}`,
      );
    }
  }
}

/** Groups a section applies to: all when its `processes` is empty. */
export function appliesTo(processes: string[], group: string): boolean {
  return processes.length === 0 || processes.includes(group);
}

export interface ParseOptions {
  /** How the file is named in messages (default `fly.toml`). */
  file?: string;
}

export function parseFlyToml(text: string, options: ParseOptions = {}): ParsedFlyToml {
  const doc = parseTomlDocument(text, options.file ?? 'fly.toml');
  const root = Section.root(doc);
  const sections: Section[] = [root];
  const track = <T extends Section | undefined>(s: T): T => {
    if (s) sections.push(s);
    return s;
  };
  const trackAll = (list: Section[]) => {
    sections.push(...list);
    return list;
  };

  const app = root.string('app', {
    pattern: APP_NAME,
    hint: 'app names are lowercase letters, digits and dashes',
  });
  const killTimeoutMs = root.durationMs('kill_timeout', {
    maxMs: FLY_TOML_DEFAULTS.killTimeoutMaxMs,
    bareUnitMs: 1000,
  });
  const config: AppConfig = {
    app,
    primaryRegion: root.string('primary_region'),
    killSignal: root.string('kill_signal', { oneOf: SIGNALS }),
    killTimeoutMs,
    swapSizeMb: root.int('swap_size_mb', 0),
    build: readBuild(track(root.table('build'))),
    deploy: readDeploy(track(root.table('deploy'))),
    env: {},
    processes: {},
    services: [],
    checks: [],
    mounts: [],
    vms: [],
    restarts: [],
    statics: [],
    files: [],
    experimental: {},
  };
  root.accept(...IGNORED_TOP_LEVEL);

  const env = track(root.table('env'));
  if (env) {
    for (const key of Object.keys(env.values)) {
      if (key.startsWith('FLY_')) {
        throw env.error(key, 'names starting with FLY_ are reserved for the platform', 'rename the variable');
      }
      config.env[key] = env.scalarText(key) ?? '';
    }
  }

  const processes = track(root.table('processes'));
  if (processes && Object.keys(processes.values).length > 0) {
    for (const name of Object.keys(processes.values)) {
      if (!GROUP_NAME.test(name)) {
        throw processes.error(
          name,
          'process group names are lowercase letters, digits, dashes and underscores',
        );
      }
      const command = processes.string(name) ?? '';
      config.processes[name] = parseCommand(processes, name, command);
    }
  } else {
    config.processes[DEFAULT_PROCESS_GROUP] = [];
  }

  const groupTargets: Array<{ section: Section; processes: string[] }> = [];
  const http = track(root.table('http_service'));
  if (http) {
    const service = readHttpService(http);
    config.services.push(service);
    groupTargets.push({ section: http, processes: service.processes });
  }
  for (const s of trackAll(root.tables('services'))) {
    const service = readService(s);
    config.services.push(service);
    groupTargets.push({ section: s, processes: service.processes });
  }

  const checks = track(root.table('checks'));
  if (checks) {
    for (const [name, c] of checks.childTables()) {
      track(c);
      const type = c.string('type', { oneOf: ['tcp', 'http'] });
      if (!type) throw c.error('type', 'is required (tcp or http)');
      const port = c.int('port', 1, 65535);
      if (port === undefined) throw c.error('port', 'is required');
      const check = readCheck(c, type as 'tcp' | 'http', port);
      const kind = c.string('kind', { oneOf: ['informational', 'readiness'] });
      if (kind) check.kind = kind;
      const processes = c.stringList('processes') ?? [];
      config.checks.push({ name, check, processes });
      groupTargets.push({ section: c, processes });
    }
  }

  for (const m of trackAll(root.tables('mounts'))) {
    const source = m.string('source', {
      pattern: /^[a-z0-9_]+$/,
      hint: 'volume names are lowercase letters, digits and underscores',
    });
    if (!source) throw m.error('source', 'is required (the volume name)');
    const destination = m.string('destination');
    if (!destination) throw m.error('destination', 'is required (where the volume is mounted)');
    if (!destination.startsWith('/') || destination === '/') {
      throw m.error('destination', 'must be an absolute path other than /');
    }
    const mount: MountConfig = { source, destination, processes: m.stringList('processes') ?? [] };
    const size = m.sizeMb('initial_size', 'gb');
    if (size !== undefined) mount.initialSizeGb = Math.max(1, Math.ceil(size / 1024));
    const retention = m.int('snapshot_retention', 1, 60);
    if (retention !== undefined) mount.snapshotRetention = retention;
    const threshold = m.int('auto_extend_size_threshold', 1, 99);
    if (threshold !== undefined) mount.autoExtendThresholdPercent = threshold;
    const increment = m.sizeMb('auto_extend_size_increment', 'gb');
    if (increment !== undefined) mount.autoExtendIncrementGb = Math.ceil(increment / 1024);
    const limit = m.sizeMb('auto_extend_size_limit', 'gb');
    if (limit !== undefined) mount.autoExtendLimitGb = Math.ceil(limit / 1024);
    m.accept('scheduled_snapshots');
    config.mounts.push(mount);
    groupTargets.push({ section: m, processes: mount.processes });
  }

  for (const v of trackAll(root.tables('vm'))) {
    const vm = readVm(v);
    config.vms.push(vm);
    groupTargets.push({ section: v, processes: vm.processes });
  }

  for (const r of trackAll(root.tables('restart'))) {
    const policy =
      r.string('policy', { oneOf: ['always', 'never', 'no', 'on-failure', 'on_failure'] }) ?? 'on-failure';
    const restart: RestartConfig = {
      policy: policy === 'never' || policy === 'no' ? 'no' : policy === 'always' ? 'always' : 'on-failure',
      processes: r.stringList('processes') ?? [],
    };
    const retries = r.int('retries', 0) ?? r.int('max_retries', 0);
    if (retries !== undefined) restart.retries = retries;
    config.restarts.push(restart);
    groupTargets.push({ section: r, processes: restart.processes });
  }

  for (const s of trackAll(root.tables('statics'))) {
    const guestPath = s.string('guest_path');
    const urlPrefix = s.string('url_prefix');
    if (!guestPath?.startsWith('/'))
      throw s.error('guest_path', 'is required: an absolute path in the machine');
    if (!urlPrefix?.startsWith('/')) throw s.error('url_prefix', 'is required: a URL path starting with /');
    const statics: Static & { processes: string[] } = {
      guest_path: guestPath,
      url_prefix: urlPrefix,
      processes: s.stringList('processes') ?? [],
    };
    const bucket = s.string('tigris_bucket');
    const index = s.string('index_document');
    if (bucket) statics.tigris_bucket = bucket;
    if (index) statics.index_document = index;
    config.statics.push(statics);
    groupTargets.push({ section: s, processes: statics.processes });
  }

  for (const f of trackAll(root.tables('files'))) {
    const guestPath = f.string('guest_path');
    if (!guestPath?.startsWith('/'))
      throw f.error('guest_path', 'is required: an absolute path in the machine');
    const file: FileConfig = { guestPath, processes: f.stringList('processes') ?? [] };
    const raw = f.string('raw_value');
    const secret = f.string('secret_name');
    const local = f.string('local_path');
    if ([raw, secret, local].filter((v) => v !== undefined).length !== 1) {
      throw f.error(undefined, 'needs exactly one of raw_value, secret_name or local_path');
    }
    if (raw !== undefined) file.rawValue = raw;
    if (secret !== undefined) file.secretName = secret;
    if (local !== undefined) file.localPath = local;
    config.files.push(file);
    groupTargets.push({ section: f, processes: file.processes });
  }

  const metrics = track(root.table('metrics'));
  if (metrics) {
    const port = metrics.int('port', 1, 65535);
    const path = metrics.string('path');
    if (port === undefined || !path) throw metrics.error(undefined, 'needs port and path');
    config.metrics = { port, path };
    const https = metrics.bool('https');
    if (https !== undefined) config.metrics.https = https;
    metrics.accept('processes');
  }

  const experimental = track(root.table('experimental'));
  if (experimental) {
    const cmd = commandValue(experimental, 'cmd');
    const entrypoint = commandValue(experimental, 'entrypoint');
    const exec = commandValue(experimental, 'exec');
    if (cmd) config.experimental.cmd = cmd;
    if (entrypoint) config.experimental.entrypoint = entrypoint;
    if (exec) config.experimental.exec = exec;
  }

  checkGroups(config, groupTargets);
  const hasVolumes = config.mounts.length > 0;
  if (hasVolumes && (config.deploy.strategy === 'canary' || config.deploy.strategy === 'bluegreen')) {
    const deploy = root.table('deploy') as Section;
    throw deploy.error(
      'strategy',
      `"${config.deploy.strategy}" cannot be used with [[mounts]]: a volume belongs to one machine at a time`,
      'use "rolling" or "immediate"',
    );
  }
  for (const group of Object.keys(config.processes)) {
    const mounts = config.mounts.filter((m) => appliesTo(m.processes, group));
    if (mounts.length > 1) {
      const second = root.tables('mounts')[config.mounts.indexOf(mounts[1] as MountConfig)] as Section;
      throw second.error(
        undefined,
        `process group "${group}" would mount two volumes; a machine mounts at most one`,
        'add processes = [...] to each [[mounts]] so that every group has at most one',
      );
    }
  }

  // fly-semantics §9 #6: machines that autostop stops and nothing starts again stay down.
  const servicePaths: KeyPath[] = [
    ...(http ? [['http_service']] : []),
    ...config.services.slice(http ? 1 : 0).map((_, i) => ['services', i]),
  ];
  const downStaysDown = config.services.flatMap((service, i) => {
    const path = servicePaths[i];
    if (service.autostop === 'off' || service.autostart || !path) return [];
    const line = doc.line([...path, 'auto_start_machines']);
    return [
      `${doc.file}${line ? ` line ${line}` : ''}: ${pathText([...path, 'auto_start_machines'])}: false while ` +
        'auto_stop_machines is on: machines stopped when idle will not start again on the next request',
    ];
  });
  const warnings = downStaysDown.concat(
    sections.flatMap((s) =>
      s
        .unknownKeys()
        .map(
          ([key, line]) => `${doc.file}${line ? ` line ${line}` : ''}: ${key}: not used by Hangar, ignored`,
        ),
    ),
  );
  return { config, warnings };
}
