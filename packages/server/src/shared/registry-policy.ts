import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { HangarError } from './errors.js';

/**
 * Which registries a machine's image may come from. A registry named by a tenant is a host hangard
 * connects to from the host's own network, so a name that is (or resolves to) an address on the host or
 * its private networks would let a tenant probe them. Such hosts are refused before any connection is
 * made, except Hangar's own registry and the hosts the operator lists. The check runs when a machine is
 * created or updated and again right before a pull, because what a name resolves to can change.
 */
export interface RegistryPolicy {
  /** `host:port` spellings of Hangar's own registry (always allowed; machines.ts checks its app spaces). */
  own: string[];
  /** Registries the operator allows whatever they resolve to: `host` (any port) or `host:port`. */
  allowed: string[];
  /** Allow RFC 1918, unique-local (except 6PN) and CGNAT addresses; never loopback, link-local or 6PN. */
  allowPrivate: boolean;
}

/** Addresses on the host itself or nowhere: refused even with allowPrivate. */
const NEVER = new BlockList();
NEVER.addSubnet('0.0.0.0', 8, 'ipv4'); // "this network", unspecified
NEVER.addSubnet('127.0.0.0', 8, 'ipv4'); // loopback
NEVER.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local (cloud metadata services live here)
NEVER.addSubnet('224.0.0.0', 4, 'ipv4'); // multicast
NEVER.addSubnet('240.0.0.0', 4, 'ipv4'); // reserved and broadcast
NEVER.addAddress('::', 'ipv6'); // unspecified
NEVER.addAddress('::1', 'ipv6'); // loopback
NEVER.addSubnet('fe80::', 10, 'ipv6'); // link-local
NEVER.addSubnet('ff00::', 8, 'ipv6'); // multicast
NEVER.addSubnet('fdaa::', 16, 'ipv6'); // 6PN: the machines' private networks

/** Private networks: refused unless the operator sets allowPrivate. */
const PRIVATE = new BlockList();
PRIVATE.addSubnet('10.0.0.0', 8, 'ipv4');
PRIVATE.addSubnet('172.16.0.0', 12, 'ipv4');
PRIVATE.addSubnet('192.168.0.0', 16, 'ipv4');
PRIVATE.addSubnet('100.64.0.0', 10, 'ipv4'); // CGNAT
PRIVATE.addSubnet('fc00::', 7, 'ipv6'); // unique local

/** How long a look-up may take before it counts as failed. */
const LOOKUP_TIMEOUT_MS = 3_000;

export type Lookup = (host: string) => Promise<string[]>;

const systemLookup: Lookup = async (host) =>
  (await lookup(host, { all: true, verbatim: true })).map((entry) => entry.address);

/** `host` and `port` of a registry as image references write it: `name`, `name:5000`, `[::1]:5000`. */
export function splitRegistry(registry: string): { host: string; port: string } {
  const match = /^\[([^\]]+)\](?::(\d+))?$/.exec(registry) ?? /^([^:]+)(?::(\d+))?$/.exec(registry);
  return { host: (match?.[1] ?? registry).toLowerCase(), port: match?.[2] ?? '' };
}

/** Whether `registry` is Hangar's own, under any of its spellings. */
export function isOwnRegistry(registry: string, policy: Pick<RegistryPolicy, 'own'>): boolean {
  const lower = registry.toLowerCase();
  return policy.own.some((own) => own.toLowerCase() === lower);
}

function isAllowed(registry: string, policy: RegistryPolicy): boolean {
  if (isOwnRegistry(registry, policy)) return true;
  const { host, port } = splitRegistry(registry);
  return policy.allowed.some((entry) => {
    const allowed = splitRegistry(entry);
    return allowed.host === host && (allowed.port === '' || allowed.port === port);
  });
}

/** Why an address may not serve images, or undefined when it may. */
export function addressRefusal(address: string, allowPrivate: boolean): string | undefined {
  const family = isIP(address);
  if (family === 0) return 'it is not an IP address';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (NEVER.check(address, type)) return 'it is a loopback, link-local, private-network or reserved address';
  if (!allowPrivate && PRIVATE.check(address, type)) return 'it is a private address';
  return undefined;
}

/**
 * Throws `forbidden` when the policy refuses `registry`. A name is resolved first; a name that does not
 * resolve is let through (the pull will fail as unreachable, and this check runs again before it). The
 * messages name the rule and the registry as the caller wrote it, never what it resolved to.
 */
export async function checkRegistryHost(
  registry: string,
  policy: RegistryPolicy,
  resolve: Lookup = systemLookup,
): Promise<void> {
  if (isAllowed(registry, policy)) return;
  const { host } = splitRegistry(registry);
  const refuse = (why: string) =>
    new HangarError(
      'forbidden',
      `image registry ${registry} is refused: ${why}; images come from public registries, Hangar's own ` +
        'registry, or registries the operator allows (registry.allowed in the configuration)',
    );
  if (isIP(host) !== 0) {
    const why = addressRefusal(host, policy.allowPrivate);
    if (why) throw refuse(why);
    return;
  }
  let addresses: string[] = [];
  try {
    addresses = await withTimeout(resolve(host), LOOKUP_TIMEOUT_MS);
  } catch {
    // Unresolvable now: nothing to connect to; the check before the pull resolves it again.
  }
  for (const address of addresses) {
    if (addressRefusal(address, policy.allowPrivate)) {
      throw refuse('its name resolves to a loopback, link-local, private-network or reserved address');
    }
  }
  // Names of this host by definition (RFC 6761), whatever this host's resolver says of them.
  if (host === 'localhost' || host.endsWith('.localhost')) throw refuse('it names this host');
}

async function withTimeout<T>(work: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HangarError('deadline_exceeded', 'look-up timed out')), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
