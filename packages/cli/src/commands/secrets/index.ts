import type { Noun } from '../../command.js';
import deploy from './deploy.js';
import importSecrets from './import.js';
import list from './list.js';
import set from './set.js';
import unset from './unset.js';

export const secrets: Noun = {
  name: 'secrets',
  aliases: ['secret'],
  summary: 'Manage app secrets (injected into machines as environment variables)',
  examples: ['hangar secrets list -a acme'],
  verbs: [set, list, unset, importSecrets, deploy],
};
