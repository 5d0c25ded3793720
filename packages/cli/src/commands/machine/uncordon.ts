import { machineAction } from './shared.js';

export default machineAction({
  name: 'uncordon',
  summary: 'Route traffic to one or more cordoned machines again',
  examples: ['hangar machine uncordon 148ed193b95e89 -a acme'],
  act: ({ client }, app, id) => client().machines.uncordon(app, id),
  done: (id) => `Machine ${id} was uncordoned`,
});
