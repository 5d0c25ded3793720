import { machineAction } from './shared.js';

export default machineAction({
  name: 'cordon',
  summary: 'Stop routing traffic to one or more machines (they keep running)',
  examples: ['hangar machine cordon 148ed193b95e89 -a acme'],
  act: ({ client }, app, id) => client().machines.cordon(app, id),
  done: (id) => `Machine ${id} was cordoned`,
});
