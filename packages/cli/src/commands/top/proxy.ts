import net from 'node:net';
import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';
import { openUpgrade } from '../../upgrade.js';

interface Opts {
  bindAddr: string;
  quiet?: boolean;
}

/** `LOCAL[:REMOTE]`: one port means the same on both sides; LOCAL 0 lets the system pick one. */
export function parsePorts(spec: string): { local: number; remote: number } {
  const match = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(spec.trim());
  const local = match ? Number(match[1]) : Number.NaN;
  const remote = match?.[2] !== undefined ? Number(match[2]) : local;
  if (!match || local > 65535 || remote < 1 || remote > 65535) {
    throw new CliError(`invalid ports "${spec}"`, 'write LOCAL[:REMOTE], e.g. 5432 or 15432:5432');
  }
  return { local, remote };
}

export default defineVerb<Opts>({
  usage: 'proxy <ports> [host]',
  summary:
    'Forward a local port to a machine, .internal name or Flycast address in the app’s private network',
  description:
    'Listen on a local port and forward every connection to REMOTE on a host in the app’s private ' +
    'network: a .internal name (default: <app>.internal), a .flycast name, a machine’s 6PN address or a ' +
    'Flycast address. PORTS is LOCAL[:REMOTE] (one number: the same on both sides; LOCAL 0: any free ' +
    'port). Each connection is a tunnel through the API, made by hangard after it checked the ' +
    'destination belongs to the app’s network; the token needs write access to the app. Runs until ' +
    'interrupted (Ctrl-C).',
  examples: [
    'hangar proxy 5432 -a acme',
    'hangar proxy 15432:5432 db.process.acme.internal -a acme',
    'hangar proxy 8080:80 acme.flycast -a acme',
  ],
  app: true,
  options(cmd) {
    cmd
      .option('-b, --bind-addr <address>', 'local address to listen on', '127.0.0.1')
      .option('-q, --quiet', 'print nothing but errors');
  },
  async run({ app, arg, args, opts, config, io }) {
    const name = app();
    const { local, remote } = parsePorts(arg(0));
    const host = args(1)[0] ?? `${name}.internal`;
    const resolved = config();
    const path = `v1/apps/${encodeURIComponent(name)}/tunnel?${new URLSearchParams({ host, port: String(remote) })}`;

    const live = new Set<net.Socket>();
    const server = net.createServer((client) => {
      live.add(client);
      client.once('close', () => live.delete(client));
      client.pause();
      client.on('error', () => client.destroy());
      openUpgrade(resolved, path, 'hangar-tunnel').then(
        ({ socket }) => {
          socket.on('error', () => socket.destroy());
          client.pipe(socket);
          socket.pipe(client);
          client.on('close', () => socket.destroy());
          socket.on('close', () => client.destroy());
          client.resume();
        },
        (error: Error) => {
          const hint = error instanceof CliError && error.hint ? ` (${error.hint})` : '';
          io.stderr.write(`Error: ${error.message}${hint}\n`);
          client.destroy();
        },
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new CliError(
            `cannot listen on ${opts.bindAddr}:${local}: ${error.code ?? error.message}`,
            'choose another local port (LOCAL:REMOTE) or --bind-addr',
          ),
        ),
      );
      server.listen(local, opts.bindAddr, () => resolve());
    });
    const bound = (server.address() as net.AddressInfo).port;
    if (!opts.quiet) {
      io.stdout.write(`Proxying local port ${bound} to remote [${host}]:${remote} (Ctrl-C to stop)\n`);
    }
    // Until interrupted: the process ends with the server, connections in flight are cut.
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        server.close();
        for (const client of live) client.destroy();
        resolve();
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  },
});
