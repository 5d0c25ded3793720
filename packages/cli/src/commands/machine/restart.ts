import { durationFlag } from '../../flags.js';
import { machineAction } from './shared.js';

export default machineAction<{ signal?: string; timeout?: string; forceStop?: boolean }>({
  name: 'restart',
  summary: 'Restart one or more machines',
  examples: ['hangar machine restart 148ed193b95e89 -a acme'],
  options(cmd) {
    cmd.option('-s, --signal <name>', 'signal used to stop the machine');
    cmd.option('--timeout <duration>', 'how long to wait for it to stop, in seconds or as 30s/1m');
    cmd.option('--force-stop', 'kill the machine instead of waiting for it to stop');
  },
  act: ({ client, opts }, app, id) =>
    client().machines.restart(app, id, {
      signal: opts.signal,
      timeout: durationFlag(opts.timeout),
      forceStop: opts.forceStop,
    }),
  done: (id) => `Machine ${id} was restarted`,
});
