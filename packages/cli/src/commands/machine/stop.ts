import { durationFlag } from '../../flags.js';
import { machineAction } from './shared.js';

export default machineAction<{ signal?: string; timeout?: string }>({
  name: 'stop',
  summary: 'Stop one or more machines',
  examples: ['hangar machine stop 148ed193b95e89 -a acme --signal SIGTERM --timeout 30s'],
  options(cmd) {
    cmd.option('-s, --signal <name>', 'signal to send first (default: the machine’s stop_config or SIGINT)');
    cmd.option('--timeout <duration>', 'how long to wait before killing it, in seconds or as 30s/1m');
  },
  act: ({ client, opts }, app, id) =>
    client().machines.stop(app, id, { signal: opts.signal, timeout: durationFlag(opts.timeout) }),
  done: (id) => `Machine ${id} was stopped`,
});
