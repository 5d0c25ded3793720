import { defineVerb } from '../../command.js';
import { CliError } from '../../errors.js';

/** `30`, `30s` or `2m` as whole seconds. */
function seconds(value: string): number {
  const match = /^(\d+)(s|m)?$/.exec(value.trim());
  if (!match) throw new CliError(`--timeout must be seconds, like 30, 30s or 2m; got "${value}"`);
  return Number(match[1]) * (match[2] === 'm' ? 60 : 1);
}

export default defineVerb<{ timeout?: string }>({
  usage: 'exec <id> <command...>',
  summary: 'Run a command inside a machine and print its output; exits with its exit code',
  examples: ["hangar machine exec 148ed193b95e89 -a acme -- sh -c 'ls /data'"],
  app: true,
  json: true,
  options(cmd) {
    cmd.option('--timeout <duration>', 'how long the command may run, in seconds or as 30s/1m', '30s');
  },
  async run({ app, arg, args, client, opts, out, io }) {
    const result = await client().machines.exec(app(), arg(0), {
      command: args(1),
      timeout: seconds(opts.timeout ?? '30'),
    });
    if (out.json) {
      out.line(JSON.stringify(result));
    } else {
      if (result.stdout) io.stdout.write(result.stdout);
      if (result.stderr) io.stderr.write(result.stderr);
    }
    return result.exit_code ?? 0;
  },
});
