import { defineVerb } from '../../command.js';
import { intFlag } from '../../flags.js';

export default defineVerb<{ follow?: boolean; lines?: string }>({
  usage: 'logs <id>',
  summary: 'Show a machine’s output (stdout and stderr); --follow keeps printing new lines',
  examples: [
    'hangar machine logs 148ed193b95e89 -a acme --follow',
    'hangar machine logs 148ed193b95e89 -a acme -n 500',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('-f, --follow', 'keep printing new lines until interrupted');
    cmd.option('-n, --lines <count>', 'how many recent lines to show first', '100');
  },
  async run({ app, arg, client, opts, out }) {
    // Interrupting (Ctrl-C) ends the process, and with it the followed stream.
    const lines = client().machines.logs(app(), arg(0), {
      tail: intFlag(opts.lines, '--lines', 0),
      follow: opts.follow === true,
    });
    for await (const line of lines) out.line(out.json ? JSON.stringify(line) : line.message);
  },
});
