import type { Noun } from '../../command.js';
import list from './list.js';

export const orgs: Noun = {
  name: 'orgs',
  aliases: ['org'],
  summary: 'Organizations',
  examples: ['hangar orgs list'],
  verbs: [list],
};
