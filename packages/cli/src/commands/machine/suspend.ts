import { machineAction } from './shared.js';

export default machineAction({
  name: 'suspend',
  summary: 'Suspend one or more machines (memory kept; falls back to stop when not possible)',
  examples: ['hangar machine suspend 148ed193b95e89 -a acme'],
  act: ({ client }, app, id) => client().machines.suspend(app, id),
  done: (id) => `Machine ${id} was suspended`,
});
