import { machineAction } from './shared.js';

export default machineAction<{ force?: boolean }>({
  name: 'destroy',
  aliases: ['remove', 'rm'],
  summary: 'Destroy one or more machines',
  examples: ['hangar machine destroy 148ed193b95e89 -a acme --force'],
  options(cmd) {
    cmd.option('-f, --force', 'destroy even if it is running');
  },
  act: ({ client, opts }, app, id) => client().machines.destroy(app, id, { force: opts.force }),
  done: (id) => `Machine ${id} was destroyed`,
});
