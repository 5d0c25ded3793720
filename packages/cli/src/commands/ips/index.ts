import type { Noun } from '../../command.js';
import allocateV4 from './allocate-v4.js';
import allocateV6 from './allocate-v6.js';
import list from './list.js';
import privateIps from './private.js';
import release from './release.js';

export const ips: Noun = {
  name: 'ips',
  aliases: ['ip'],
  summary: 'Manage an app’s IP addresses (public and Flycast)',
  examples: ['hangar ips list -a acme'],
  verbs: [list, allocateV6, allocateV4, privateIps, release],
};
