import type { Noun } from '../../command.js';
import create from './create.js';
import destroy from './destroy.js';
import egress from './egress.js';
import list from './list.js';
import show from './show.js';

export const apps: Noun = {
  name: 'apps',
  aliases: ['app'],
  summary: 'Manage apps',
  examples: ['hangar apps list'],
  verbs: [create, list, show, destroy, egress],
};
