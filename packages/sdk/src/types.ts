// Wire types for the Fly Machines REST API (and Hangar's extensions).
//
// Field names follow the wire (snake_case) so that JSON copied from Fly's docs type-checks as is.
// Nearly everything is optional because real servers omit empty fields and older API versions lack newer
// ones; required fields are the ones a client cannot do without (ids, names, states).
// String unions end in `(string & {})` where servers may send values this SDK does not know yet: editors
// still offer the known values, and unknown ones still type-check.

type OpenString = string & {};

/** A Go duration string (`"10s"`, `"500ms"`) or an integer number of nanoseconds. */
export type Duration = string | number;

// ---------------------------------------------------------------------------------------------------------
// Apps

export interface Organization {
  name?: string;
  slug: string;
  internal_numeric_id?: number;
}

export interface App {
  id: string;
  name: string;
  /** `pending` until the first deploy, then `deployed`; `suspended` also exists. */
  status?: 'pending' | 'deployed' | 'suspended' | OpenString;
  organization?: Organization;
  /** Name of the app's private network; `"default"` for the org network. */
  network?: string;
  machine_count?: number;
  volume_count?: number;
  internal_numeric_id?: number;
  cname_target?: string;
  app_role?: string;
  created_at?: string;
}

/** One row of `GET /v1/apps`. */
export interface AppSummary {
  id: string;
  name: string;
  machine_count?: number;
  volume_count?: number;
  network?: string;
}

export interface ListAppsResponse {
  total_apps: number;
  apps: AppSummary[];
  /** Hangar: where the next page starts, when there is one (pass it as `cursor`). */
  next_cursor?: string;
}

export interface CreateAppRequest {
  app_name: string;
  org_slug: string;
  /** Custom private network; created on first use, joined if it already exists. */
  network?: string;
  app_role_id?: string;
  enable_subdomains?: boolean;
}

export interface DeleteAppOptions {
  /** Stop and delete the app's machines too, instead of refusing while machines run. */
  force?: boolean;
}

export interface DeployTokenRequest {
  /** Go duration such as `"720h"`. */
  expiry?: string;
}

export interface DeployTokenResponse {
  token: string;
}

// ---------------------------------------------------------------------------------------------------------
// Machine config (fly-semantics §2)

export interface MachineGuest {
  cpu_kind?: 'shared' | 'performance' | OpenString;
  cpus?: number;
  memory_mb?: number;
  gpus?: number;
  gpu_kind?: string;
  host_dedication_id?: string;
  kernel_args?: string[];
  /** Deprecated in favour of `MachineConfig.rootfs`. */
  persist_rootfs?: 'never' | 'restart' | 'always' | OpenString;
  max_memory_mb?: number;
}

export interface MachineInit {
  /** Replaces the image's ENTRYPOINT and CMD. */
  exec?: string[];
  entrypoint?: string[];
  cmd?: string[];
  tty?: boolean;
  swap_size_mb?: number;
  kernel_args?: string[];
}

export interface MachineRestart {
  policy?: 'no' | 'always' | 'on-failure' | 'spot-price' | OpenString;
  max_retries?: number;
  gpu_bid_price?: number;
}

export interface MachineMount {
  /** Volume id (`vol_...`). */
  volume?: string;
  path: string;
  name?: string;
  encrypted?: boolean;
  size_gb?: number;
  extend_threshold_percent?: number;
  add_size_gb?: number;
  size_gb_limit?: number;
}

export interface MachineFile {
  /** Absolute path inside the machine. */
  guest_path: string;
  /** Base64-encoded contents. */
  raw_value?: string;
  /** Name of an app secret holding base64-encoded contents. */
  secret_name?: string;
  image_config?: string;
  mode?: number;
}

export interface StopConfig {
  signal?: string;
  timeout?: Duration;
}

export interface DnsOption {
  name: string;
  value: string;
}

export interface DnsForwardRule {
  basename: string;
  addr: string;
}

export interface DnsConfig {
  /** Keep the machine out of `.internal` DNS. */
  skip_registration?: boolean;
  nameservers?: string[];
  searches?: string[];
  options?: DnsOption[];
  dns_forward_rules?: DnsForwardRule[];
  hostname?: string;
  hostname_fqdn?: string;
}

export interface MachineEnvFrom {
  env_var: string;
  field_ref: 'id' | 'version' | 'app_name' | 'private_ip' | 'region' | 'image' | OpenString;
}

export interface MachineSecretRef {
  env_var: string;
  name: string;
}

export interface MachineProcess {
  exec?: string[];
  entrypoint?: string[];
  cmd?: string[];
  user?: string;
  env?: Record<string, string>;
  env_from?: MachineEnvFrom[];
  secrets?: MachineSecretRef[];
  ignore_app_secrets?: boolean;
}

export interface MachineHttpHeader {
  name: string;
  values: string[];
}

export interface MachineCheck {
  type?: 'tcp' | 'http' | OpenString;
  port?: number;
  interval?: Duration;
  timeout?: Duration;
  grace_period?: Duration;
  method?: string;
  path?: string;
  protocol?: 'http' | 'https' | OpenString;
  tls_server_name?: string;
  tls_skip_verify?: boolean;
  headers?: MachineHttpHeader[];
  /** Top-level checks only: `readiness` takes a failing machine out of the load balancer. */
  kind?: 'informational' | 'readiness' | OpenString;
}

/** Service checks have the same shape as top-level checks (without `kind`). */
export type MachineServiceCheck = Omit<MachineCheck, 'kind'>;

export interface MachineServiceConcurrency {
  type?: 'connections' | 'requests' | OpenString;
  soft_limit?: number;
  hard_limit?: number;
}

export interface ReplayCacheRule {
  path_prefix: string;
  ttl_seconds: number;
  type: 'cookie' | 'header' | OpenString;
  name: string;
  allow_bypass?: boolean;
}

export interface HttpResponseOptions {
  /** `false` removes a header; a string or list sets it. */
  headers?: Record<string, false | string | string[]>;
  pristine?: boolean;
}

export interface HttpOptions {
  compress?: boolean;
  h2_backend?: boolean;
  idle_timeout?: number;
  headers_read_timeout?: number;
  response?: HttpResponseOptions;
  replay_cache?: ReplayCacheRule[];
}

export interface TlsOptions {
  alpn?: string[];
  versions?: string[];
  default_self_signed?: boolean;
}

export interface ProxyProtoOptions {
  version?: 'v1' | 'v2' | OpenString;
}

export interface MachinePort {
  port?: number;
  start_port?: number;
  end_port?: number;
  handlers?: Array<'http' | 'tls' | 'pg_tls' | 'proxy_proto' | OpenString>;
  force_https?: boolean;
  http_options?: HttpOptions;
  tls_options?: TlsOptions;
  proxy_proto_options?: ProxyProtoOptions;
}

/**
 * On input `autostop` accepts `"off" | "stop" | "suspend"` or a boolean; servers answer `false` (off),
 * `true` (stop) or `"suspend"` so that old clients keep working.
 */
export type Autostop = boolean | 'off' | 'stop' | 'suspend';

export interface MachineService {
  protocol: 'tcp' | 'udp' | OpenString;
  internal_port: number;
  ports?: MachinePort[];
  concurrency?: MachineServiceConcurrency;
  autostart?: boolean;
  autostop?: Autostop;
  min_machines_running?: number;
  checks?: MachineServiceCheck[];
  force_instance_key?: string;
  force_instance_description?: string;
}

export interface Static {
  guest_path: string;
  url_prefix: string;
  tigris_bucket?: string;
  index_document?: string;
}

export interface MachineMetrics {
  port: number;
  path: string;
  https?: boolean;
}

export interface MachineRootfs {
  persist?: 'never' | 'restart' | 'always' | OpenString;
  size_gb?: number;
}

export interface MachineConfig {
  /** The only required field: an OCI image reference. */
  image: string;
  env?: Record<string, string>;
  init?: MachineInit;
  guest?: MachineGuest;
  /** Deprecated preset (`shared-cpu-1x`, `performance-2x`, ...); mutually exclusive with `guest`. */
  size?: string;
  services?: MachineService[];
  checks?: Record<string, MachineCheck>;
  /** At most one mount. */
  mounts?: MachineMount[];
  restart?: MachineRestart;
  auto_destroy?: boolean;
  metadata?: Record<string, string>;
  processes?: MachineProcess[];
  files?: MachineFile[];
  stop_config?: StopConfig;
  dns?: DnsConfig;
  standbys?: string[];
  schedule?: 'hourly' | 'daily' | 'weekly' | 'monthly' | OpenString;
  statics?: Static[];
  metrics?: MachineMetrics;
  rootfs?: MachineRootfs;
  cache_drive?: { size_mb?: number };
  spot?: { max_price_fraction?: number };
  /** Deprecated: use `services[].autostart`. */
  disable_machine_autostart?: boolean;
  /** Multi-container machines; optional for Hangar. */
  containers?: unknown[];
  volumes?: unknown[];
}

// ---------------------------------------------------------------------------------------------------------
// Machines

export type MachineState =
  | 'created'
  | 'starting'
  | 'started'
  | 'stopping'
  | 'stopped'
  | 'suspending'
  | 'suspended'
  | 'restarting'
  | 'updating'
  | 'replacing'
  | 'destroying'
  | 'destroyed'
  | 'failed'
  | 'launch_failed'
  | 'replaced'
  | 'migrated'
  | OpenString;

/** States accepted by the `wait` endpoint. */
export type WaitableState = 'started' | 'stopped' | 'suspended' | 'destroyed' | OpenString;

export interface ImageRef {
  registry?: string;
  repository?: string;
  tag?: string;
  digest?: string;
  labels?: Record<string, string>;
}

export interface CheckStatus {
  name: string;
  status: 'passing' | 'warning' | 'critical' | OpenString;
  output?: string;
  updated_at?: string;
}

export interface ExitEvent {
  exit_code?: number;
  guest_exit_code?: number;
  guest_signal?: number;
  oom_killed?: boolean;
  requested_stop?: boolean;
  restarting?: boolean;
  /** A number (Fly) or a name (`SIGKILL`, Hangar). */
  signal?: number | string;
  exited_at?: number | string;
}

export interface MachineEvent {
  id?: string;
  type: 'launch' | 'start' | 'stop' | 'exit' | 'restart' | 'update' | 'suspend' | 'destroy' | OpenString;
  status: string;
  /** `user` (an API caller), `flyd` (the host agent), or another component. */
  source?: string;
  /** Unix milliseconds. */
  timestamp: number;
  request?: {
    exit_event?: ExitEvent;
    restart_count?: number;
    [key: string]: unknown;
  };
}

export interface MachineContainer {
  name: string;
  state?: string;
}

export interface Machine {
  id: string;
  name: string;
  state: MachineState;
  region: string;
  /** Current version (ULID); changes on every update. */
  instance_id: string;
  version?: string;
  /** 6PN address. */
  private_ip?: string;
  created_at?: string;
  updated_at?: string;
  /** Absent when `host_status` is not `ok`; see `incomplete_config`. */
  config?: MachineConfig;
  incomplete_config?: MachineConfig;
  image_ref?: ImageRef;
  events?: MachineEvent[];
  checks?: CheckStatus[];
  /** Lease nonce, set when the machine was created with `lease_ttl`. */
  nonce?: string;
  host_status?: 'ok' | 'unknown' | 'unreachable' | OpenString;
  cordoned?: boolean;
  containers?: MachineContainer[];
}

export interface CreateMachineRequest {
  config: MachineConfig;
  /** Unique within the app; generated when omitted. Immutable. */
  name?: string;
  /** Three-letter region code. Immutable. */
  region?: string;
  /** Create without booting (the machine stays `created`). */
  skip_launch?: boolean;
  /** Create already cordoned (no traffic until uncordoned). */
  skip_service_registration?: boolean;
  /** Acquire a lease atomically, in seconds; the nonce comes back in `Machine.nonce`. */
  lease_ttl?: number;
  lsvd?: boolean;
  /** Refuse (412) until app secrets of at least this version can be injected. */
  min_secrets_version?: number;
  skip_secrets?: boolean;
}

export interface UpdateMachineRequest extends CreateMachineRequest {
  /** Optimistic-concurrency guard: the `instance_id` the caller last saw. */
  current_version?: string;
}

export interface ListMachinesOptions {
  includeDeleted?: boolean;
  region?: string;
  /** One state or several (sent as a comma-separated list). */
  state?: MachineState | MachineState[];
  /** Trimmed payload. */
  summary?: boolean;
  /** Only machines whose metadata has all these key/value pairs (`metadata.<key>=<value>`). */
  metadata?: Record<string, string>;
  /** Machines per request (Hangar's `limit`, 1-1000); the list still holds every page. */
  pageSize?: number;
}

export interface StartMachineResponse {
  previous_state?: MachineState;
  migrated?: boolean;
  new_host?: string;
  status?: string;
  message?: string;
}

export interface StopMachineOptions {
  /** Signal name, e.g. `SIGTERM` (default: the machine's `stop_config`, else SIGINT). */
  signal?: string;
  /** Seconds (number) or a Go duration (`"30s"`) before the machine is killed. */
  timeout?: number | string;
}

export interface RestartMachineOptions extends StopMachineOptions {
  forceStop?: boolean;
}

export interface DestroyMachineOptions {
  /** Destroy even if the machine is running (sent as `force=true`, the documented flag). */
  force?: boolean;
  /** fly-go's spelling of the same idea (sent as `kill=true`). */
  kill?: boolean;
}

export interface WaitMachineOptions {
  /** Target state(s); the server's default is `started`. Several states are sent as repeated params. */
  state?: WaitableState | WaitableState[];
  /** Seconds, 1–60 (Fly rejects larger values). */
  timeout?: number;
  instanceId?: string;
  version?: string;
  fromEventId?: string;
}

export interface WaitMachineResponse {
  ok?: boolean;
  state?: MachineState;
  version?: string;
  event_id?: string;
  [key: string]: unknown;
}

export interface WaitForStateOptions {
  /** Overall deadline in milliseconds (default 60 000). */
  timeoutMs?: number;
  instanceId?: string;
  version?: string;
}

export interface Lease {
  nonce: string;
  /** Unix seconds. */
  expires_at: number;
  owner?: string;
  description?: string;
  /** Machine version the lease was taken on. */
  version?: string;
}

/** Lease endpoints wrap their payload: `{"status":"success","data":{...}}`. */
export interface LeaseEnvelope {
  status?: string;
  data: Lease;
  message?: string;
  code?: string;
}

export interface AcquireLeaseOptions {
  /** Lease duration in seconds. */
  ttl?: number;
  description?: string;
  /** Nonce of a lease you hold: refreshes it instead of acquiring a new one. */
  nonce?: string;
}

export interface PatchMetadataOptions {
  /** Reject (412) if the machine's version changed since the caller read it. */
  machineVersion?: string;
}

export interface ListEventsOptions {
  limit?: number;
}

export interface MachineVersion {
  version: string;
  user_config?: MachineConfig;
}

export interface ListenSocket {
  proto: string;
  address: string;
}

/** One line of a machine's output, from `GET …/logs` (Hangar). */
export interface MachineLogLine {
  instance: string;
  message: string;
}

export interface ProcessStat {
  pid: number;
  stime?: number;
  rtime?: number;
  command?: string;
  directory?: string;
  cpu?: number;
  rss?: number;
  listen_sockets?: ListenSocket[];
}

export interface PsOptions {
  sortBy?: string;
  order?: 'asc' | 'desc' | OpenString;
}

export interface ExecRequest {
  command: string[];
  /** Seconds. */
  timeout?: number;
  stdin?: string;
  container?: string;
}

export interface ExecResponse {
  exit_code?: number;
  exit_signal?: number;
  stdout?: string;
  stderr?: string;
}

// ---------------------------------------------------------------------------------------------------------
// Volumes

export type VolumeState =
  | 'creating'
  | 'created'
  | 'extending'
  | 'restoring'
  | 'enabling_remote_export'
  | 'hydrating'
  | 'recovering'
  | 'scheduling_destroy'
  | 'pending_destroy'
  | 'destroying'
  | 'destroyed'
  | OpenString;

export interface Volume {
  id: string;
  name: string;
  state: VolumeState;
  size_gb: number;
  region: string;
  zone?: string;
  encrypted?: boolean;
  attached_machine_id?: string | null;
  attached_alloc_id?: string | null;
  created_at?: string;
  blocks?: number;
  block_size?: number;
  blocks_free?: number;
  blocks_avail?: number;
  bytes_total?: number;
  bytes_used?: number;
  fstype?: 'ext4' | 'raw' | OpenString;
  snapshot_retention?: number;
  auto_backup_enabled?: boolean;
  host_dedication_id?: string;
  host_dedication_key?: string;
  host_status?: string;
}

export interface CreateVolumeRequest {
  name: string;
  region?: string;
  size_gb?: number;
  encrypted?: boolean;
  fstype?: 'ext4' | 'raw' | OpenString;
  require_unique_zone?: boolean;
  unique_zone_app_wide?: boolean;
  /** Days, 1–60. */
  snapshot_retention?: number;
  auto_backup_enabled?: boolean;
  /** Restore from this snapshot. */
  snapshot_id?: string;
  /** Fork this volume. */
  source_volume_id?: string;
  /** Placement hint: the machine that will mount the volume. */
  compute?: MachineGuest;
  compute_image?: string;
  machines_only?: boolean;
}

export interface ForkVolumeRequest {
  /** Name of the new volume (default: the source's). */
  name?: string;
  region?: string;
}

export interface UpdateVolumeRequest {
  snapshot_retention?: number;
  auto_backup_enabled?: boolean;
}

export interface ExtendVolumeResponse {
  volume: Volume;
  /** Whether the attached machine must restart to see the new size. */
  needs_restart: boolean;
}

export interface VolumeSnapshot {
  id: string;
  size?: number;
  volume_size?: number;
  digest?: string;
  created_at?: string;
  status?: 'waiting' | 'running' | 'created' | OpenString;
  retention_days?: number;
}

// ---------------------------------------------------------------------------------------------------------
// Secrets

export interface AppSecret {
  name: string;
  digest?: string;
  created_at?: string;
  updated_at?: string;
  /** Only with `showSecrets` and a token allowed to read values. */
  value?: string;
}

export interface ListSecretsOptions {
  showSecrets?: boolean;
  /** Wait-free check: fail unless the app's secrets are at least this version. */
  minVersion?: number;
}

export interface ListSecretsResponse {
  secrets: AppSecret[];
}

export interface SetSecretsResponse {
  secrets: AppSecret[];
  /** App secrets version after the change; pass it as `min_secrets_version`. */
  version: number;
  /** Deprecated capitalised copy of `version`. */
  Version?: number;
}

export interface SetSecretResponse extends AppSecret {
  version: number;
}

export interface DeleteSecretResponse {
  version: number;
}

// ---------------------------------------------------------------------------------------------------------
// IP assignments

export type IPAssignmentType = 'v4' | 'shared_v4' | 'v6' | 'private_v6';

export interface IPAssignment {
  ip: string;
  region?: string;
  service_name?: string;
  shared?: boolean;
  created_at?: string;
  egress?: boolean;
  /** Hangar returns the type; Fly's API omits it (clients infer Flycast from the `fdaa:` prefix). */
  type?: IPAssignmentType | OpenString;
  network?: string | { name?: string; org_slug?: string };
}

export interface ListIPAssignmentsResponse {
  ips: IPAssignment[];
}

export interface AllocateIPRequest {
  type: IPAssignmentType;
  /** For `private_v6` (Flycast): the network the callers live in. */
  network?: string;
  region?: string;
  service_name?: string;
  /** For `private_v6`: another org that should reach the app. */
  org_slug?: string;
}

// ---------------------------------------------------------------------------------------------------------
// Certificates (custom hostnames)

/** One certificate of a hostname. */
export interface CertificateDetail {
  source?: 'custom' | 'acme' | OpenString;
  status?: string;
  issuer?: string;
  subject?: string;
  not_before?: string;
  expires_at?: string;
  fingerprint_sha256?: string;
  created_at?: string;
}

/** A custom hostname of an app and its certificates. The private key is never part of it. */
export interface AppCertificate {
  hostname: string;
  configured?: boolean;
  acme_requested?: boolean;
  status?: string;
  source?: string;
  created_at?: string;
  updated_at?: string;
  certificates?: CertificateDetail[];
}

export interface ListCertificatesResponse {
  certificates: AppCertificate[];
  total_count?: number;
}

export interface ImportCertificateRequest {
  hostname: string;
  /** The certificate chain in PEM, leaf first. */
  fullchain: string;
  /** The leaf's unencrypted private key in PEM. */
  private_key: string;
}

// ---------------------------------------------------------------------------------------------------------
// Tokens (Hangar extensions; Fly manages tokens through GraphQL)

export type TokenType = 'org' | 'deploy' | 'readonly';

export interface CreateTokenRequest {
  type: TokenType;
  org_slug: string;
  /** Required for `deploy` tokens. */
  app_name?: string;
  name?: string;
  /** Go duration, e.g. `"720h"`. */
  expiry?: string;
}

export interface TokenInfo {
  id: string;
  type: TokenType | OpenString;
  name: string;
  org_slug: string;
  app_name: string | null;
  created_at: string;
  expires_at: string | null;
}

/** The secret `token` appears only in the create response. */
export interface CreatedToken extends TokenInfo {
  token: string;
}

export interface ListTokensResponse {
  tokens: TokenInfo[];
}

export interface CurrentToken {
  token_id: string;
  org_slug: string;
  organization?: string;
  apps: string[];
  type: TokenType | OpenString;
  [key: string]: unknown;
}

export interface CurrentTokensResponse {
  tokens: CurrentToken[];
}

// ---------------------------------------------------------------------------------------------------------
// Platform

export interface Region {
  code: string;
  name?: string;
  latitude?: number;
  longitude?: number;
  gateway_available?: boolean;
  requires_paid_plan?: boolean;
  deprecated?: boolean;
  capacity?: number;
  geo_region?: string;
}

/** fly-go decodes the capitalised keys; Hangar sends both spellings. */
export interface RegionsResponse {
  Regions?: Region[];
  regions?: Region[];
  Nearest?: string;
  nearest?: string;
}

/** `GET /v1/platform/version` (Hangar). */
export interface ServerVersion {
  name: string;
  version: string;
}

/** `GET /healthz` (Hangar). */
export interface HealthResponse {
  status: string;
}

/** `GET /readyz` (Hangar): each part of the daemon and whether it is up. */
export interface ReadinessResponse {
  ready: boolean;
  status: 'ready' | 'not_ready' | OpenString;
  checks: Record<string, boolean>;
}

// ---------------------------------------------------------------------------------------------------------
// Shared

export interface OkResponse {
  ok: boolean;
}

/** Error body sent by Fly and Hangar. */
export interface ErrorBody {
  error?: string;
  message?: string;
  /** Stable machine-readable code (`not_found`, `name_taken`, ...). */
  status?: string;
  details?: unknown;
  code?: string;
}
