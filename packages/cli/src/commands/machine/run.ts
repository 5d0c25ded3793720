import { defineVerb } from '../../command.js';
import { collect, intFlag } from '../../flags.js';
import { buildMachineConfig, type RunFlags } from '../../machine-config.js';

interface Opts extends RunFlags {
  name?: string;
  region?: string;
  skipLaunch?: boolean;
  detach?: boolean;
  waitTimeout: string;
}

export default defineVerb<Opts>({
  usage: 'run <image> [command...]',
  summary: 'Create and start a machine from an image',
  description:
    'Create a machine from an image and wait until it has started. Options after the image become the ' +
    'command (put them after `--`). Ports use flyctl’s syntax: EXTERNAL:INTERNAL/PROTOCOL:HANDLER...',
  examples: [
    'hangar machine run nginx:1.27 -a acme --port 80:80/tcp:http --autostop stop -e MODE=prod',
    'hangar machine run busybox -a acme --rm -- sh -c "echo hello"',
  ],
  app: true,
  json: true,
  options(cmd) {
    cmd
      .option('--name <name>', 'machine name (generated if omitted)')
      .option('-r, --region <code>', 'region to run in')
      .option('-e, --env <NAME=VALUE>', 'environment variable (repeatable)', collect)
      .option('-m, --metadata <KEY=VALUE>', 'metadata (repeatable)', collect)
      .option('-p, --port <spec>', 'expose a port, e.g. 80:8080/tcp:http (repeatable)', collect)
      .option('--autostop <mode>', 'stop idle machines: off, stop or suspend')
      .option('--no-autostart', 'do not start the machine when a request arrives')
      .option('--memory <MB>', 'memory in megabytes (default 256)')
      .option('--cpus <n>', 'number of CPUs (default 1)')
      .option('--cpu-kind <kind>', 'shared or performance')
      .option('--restart <policy>', 'no, always (default) or on-failure')
      .option('--rm', 'destroy the machine when it exits')
      .option('-v, --volume <id:/path>', 'mount a volume')
      .option('--skip-launch', 'create the machine without starting it')
      .option('-d, --detach', 'do not wait for the machine to start')
      .option('--wait-timeout <seconds>', 'how long to wait for the machine to start', '120');
  },
  async run({ app, arg, args, opts, client, out }) {
    const appName = app();
    const config = buildMachineConfig(arg(0), args(1), opts);
    const waitMs = (intFlag(opts.waitTimeout, '--wait-timeout') ?? 120) * 1000;
    const api = client();

    let machine = await api.machines.launch(appName, {
      config,
      name: opts.name,
      region: opts.region,
      skip_launch: opts.skipLaunch,
    });
    if (!out.json) out.line(`Machine ${machine.id} (${machine.name}) created in region ${machine.region}`);
    if (!opts.skipLaunch && !opts.detach) {
      // On stdout with the lines around it: a reader that captures the two streams apart and joins them
      // saw `State: started` glued to this line, out of order. With --json, stdout stays pure JSON.
      if (!out.json) out.line(`Waiting for ${machine.id} to start...`);
      await api.waitForState(appName, machine.id, 'started', {
        timeoutMs: waitMs,
        instanceId: machine.instance_id,
      });
      machine = await api.machines.get(appName, machine.id);
    }
    if (out.json) return out.printJson(machine);
    out.line(`State: ${machine.state}`);
  },
});
