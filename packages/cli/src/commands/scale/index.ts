import type { Noun } from '../../command.js';
import count from './count.js';
import memory from './memory.js';
import show from './show.js';
import vm from './vm.js';

export const scale: Noun = {
  name: 'scale',
  summary: 'Scale an app: machine count, VM size and memory',
  examples: ['hangar scale count 3 -a acme'],
  verbs: [count, vm, memory, show],
};
