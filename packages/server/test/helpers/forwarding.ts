import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';

const CONF = '/proc/sys/net/ipv6/conf';

/**
 * Turns IPv6 forwarding on for a test, so that what keeps two networks apart is the rule set and not the
 * kernel refusing to route: per bridge (`force_forwarding`, Linux 6.17 and later) where the kernel has it,
 * else host-wide (`all.forwarding`). Returns the undo, which writes back every value it changed (a bridge
 * that is gone by then needs nothing); call it from the test's cleanup so it runs on failure too.
 */
export async function enableForwarding(bridges: readonly string[]): Promise<{
  how: string;
  restore: () => Promise<void>;
}> {
  const perBridge = bridges.every((bridge) => existsSync(`${CONF}/${bridge}/force_forwarding`));
  const paths = perBridge
    ? bridges.map((bridge) => `${CONF}/${bridge}/force_forwarding`)
    : [`${CONF}/all/forwarding`];
  const prior = new Map<string, string>();
  const restore = async () => {
    for (const [path, value] of prior) {
      await writeFile(path, value).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error; // the bridge went, and its setting with it
      });
    }
  };
  try {
    for (const path of paths) {
      prior.set(path, (await readFile(path, 'utf8')).trim());
      await writeFile(path, '1');
    }
  } catch (error) {
    await restore();
    throw error;
  }
  return { how: perBridge ? `force_forwarding on ${bridges.join(', ')}` : 'all.forwarding', restore };
}

/** Whether IPv6 packets entering `bridge` are forwarded (its own flag or the host-wide one). */
export async function forwardingOn(bridge: string): Promise<boolean> {
  const read = (path: string) =>
    readFile(path, 'utf8').then(
      (v) => v.trim() === '1',
      () => false,
    );
  return (await read(`${CONF}/${bridge}/force_forwarding`)) || (await read(`${CONF}/all/forwarding`));
}
