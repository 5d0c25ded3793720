import { machineAction } from './shared.js';

export default machineAction({
  name: 'start',
  summary: 'Start one or more machines',
  examples: ['hangar machine start 148ed193b95e89 -a acme'],
  act: ({ client }, app, id) => client().machines.start(app, id),
  done: (id) => `Machine ${id} was started`,
});
