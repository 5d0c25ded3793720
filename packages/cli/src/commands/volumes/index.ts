import type { Noun } from '../../command.js';
import create from './create.js';
import destroy from './destroy.js';
import extend from './extend.js';
import fork from './fork.js';
import list from './list.js';
import snapshots from './snapshots.js';

export const volumes: Noun = {
  name: 'volumes',
  aliases: ['volume', 'vol'],
  summary: 'Manage persistent volumes',
  examples: ['hangar volumes list -a acme'],
  verbs: [create, list, extend, fork, snapshots, destroy],
};
