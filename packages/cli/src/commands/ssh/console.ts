import { defineVerb } from '../../command.js';
import { chooseMachine, openConsole, relay, resizeFrame } from '../../console-session.js';

interface Opts {
  command?: string;
  machine?: string;
  select?: boolean;
  pty: boolean;
}

export default defineVerb<Opts>({
  usage: 'console',
  summary: 'Open a shell (or run -C CMD) in a machine, with a terminal; exits with its exit code',
  description:
    'Run an interactive shell in one of the app’s started machines (the first one, --machine ID, or ' +
    'one chosen with --select), or the command given with -C (run with sh -c). The command gets a ' +
    'terminal of this terminal’s size and TERM (resizes follow); the local terminal is in raw mode ' +
    'meanwhile. Hangar ' +
    'has no SSH server in machines: this goes through the API (write access to the app), as ' +
    '`machine exec` does. --no-pty runs without a terminal (plain pipes).',
  examples: ['hangar ssh console -a acme', "hangar ssh console -a acme -C 'ps aux' --machine 148ed193b95e89"],
  app: true,
  options(cmd) {
    cmd
      .option('-C, --command <command>', 'run this command (with sh -c) instead of a shell')
      .option('--machine <id>', 'the machine to connect to (default: the first started one)')
      .option('-s, --select', 'choose the machine from a list')
      .option('--no-pty', 'no terminal: plain pipes for input and output');
  },
  async run({ app, opts, client, config, io }) {
    const name = app();
    const machine = await chooseMachine(client(), name, opts, io);
    const stdin = process.stdin;
    const tty = opts.pty
      ? {
          rows: process.stdout.rows || 24,
          cols: process.stdout.columns || 80,
          term: io.env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(io.env.TERM) ? io.env.TERM : 'xterm',
        }
      : null;
    const socket = await openConsole(config(), name, machine, {
      command: opts.command ? ['/bin/sh', '-c', opts.command] : ['/bin/sh'],
      tty,
    });
    // Raw: every key goes to the machine's terminal as typed (Ctrl-C included), which echoes it.
    const raw = tty !== null && stdin.isTTY;
    if (raw) stdin.setRawMode(true);
    // SIGWINCH: the machine's terminal follows this one's size.
    const onResize = () => socket.write(resizeFrame(process.stdout.rows || 24, process.stdout.columns || 80));
    if (tty && process.stdout.isTTY) process.stdout.on('resize', onResize);
    try {
      return await relay(socket, stdin, process.stdout);
    } finally {
      process.stdout.off('resize', onResize);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      stdin.unref?.();
    }
  },
});
