import { readdir, readFile, readlink } from 'node:fs/promises';
import type { ProcessStat } from './runtime.js';

const CLOCK_TICKS = 100; // USER_HZ on Linux
const PAGE_SIZE = 4096;

/**
 * `ps` of a machine from /proc: pids as the machine sees them (the last NSpid), run and CPU times, RSS,
 * working directory, and the sockets each process listens on.
 */
export async function processStats(hostPids: number[]): Promise<ProcessStat[]> {
  const uptimeSec = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  const stats = await Promise.all(hostPids.map((pid) => statOne(pid, uptimeSec).catch(() => undefined)));
  return stats.filter((s): s is ProcessStat => s !== undefined).sort((a, b) => a.pid - b.pid);
}

async function statOne(pid: number, uptimeSec: number): Promise<ProcessStat> {
  const [stat, status, cmdline, cwd] = await Promise.all([
    readFile(`/proc/${pid}/stat`, 'utf8'),
    readFile(`/proc/${pid}/status`, 'utf8'),
    readFile(`/proc/${pid}/cmdline`, 'utf8'),
    readlink(`/proc/${pid}/cwd`).catch(() => ''),
  ]);
  // Fields after the command (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSec = (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  const startedSec = Number(fields[19]) / CLOCK_TICKS;
  const nspid = /^NSpid:\s+(.+)$/m.exec(status)?.[1]?.trim().split(/\s+/).at(-1);
  return {
    pid: Number(nspid ?? pid),
    stime: Math.round(startedSec),
    rtime: Math.max(0, Math.round(uptimeSec - startedSec)),
    command: cmdline
      .split('\0')
      .filter((p) => p !== '')
      .join(' '),
    directory: cwd,
    cpu: Math.round(cpuSec),
    rss: Number(fields[21]) * PAGE_SIZE,
    listen_sockets: await listeningSockets(pid),
  };
}

/** Sockets in LISTEN (TCP) or bound (UDP) state whose inode one of the process's fds holds. */
async function listeningSockets(pid: number): Promise<{ proto: string; address: string }[]> {
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => []);
  const inodes = new Set<string>();
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    const match = /^socket:\[(\d+)\]$/.exec(target);
    if (match) inodes.add(match[1]!);
  }
  if (inodes.size === 0) return [];
  const sockets: { proto: string; address: string }[] = [];
  for (const proto of ['tcp', 'tcp6', 'udp', 'udp6']) {
    const table = await readFile(`/proc/${pid}/net/${proto}`, 'utf8').catch(() => '');
    for (const line of table.split('\n').slice(1)) {
      const columns = line.trim().split(/\s+/);
      if (columns.length < 10 || !inodes.has(columns[9]!)) continue;
      const listening = proto.startsWith('tcp') ? columns[3] === '0A' : columns[3] === '07';
      if (listening) sockets.push({ proto: proto.replace('6', ''), address: decodeAddress(columns[1]!) });
    }
  }
  return sockets;
}

/** /proc/net addresses are hex, little-endian per 32-bit word: `0100007F:1F90` is 127.0.0.1:8080. */
export function decodeAddress(text: string): string {
  const [hex, portHex] = text.split(':') as [string, string];
  const port = parseInt(portHex, 16);
  if (hex.length === 8) {
    const bytes = hex
      .match(/../g)!
      .map((b) => parseInt(b, 16))
      .reverse();
    return `${bytes.join('.')}:${port}`;
  }
  const words = hex.match(/.{8}/g)!.map((word) => word.match(/../g)!.reverse().join(''));
  const groups = words
    .join('')
    .match(/.{4}/g)!
    .map((g) => parseInt(g, 16).toString(16));
  return `[${groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::')}]:${port}`;
}
