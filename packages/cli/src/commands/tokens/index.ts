import type { Noun } from '../../command.js';
import create from './create.js';
import list from './list.js';
import revoke from './revoke.js';

export const tokens: Noun = {
  name: 'tokens',
  aliases: ['token'],
  summary: 'Manage API tokens',
  examples: ['hangar tokens list'],
  verbs: [create, list, revoke],
};
