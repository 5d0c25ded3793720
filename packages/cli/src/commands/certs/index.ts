import type { Noun } from '../../command.js';
import importVerb from './import.js';
import list from './list.js';
import remove from './remove.js';
import show from './show.js';

export const certs: Noun = {
  name: 'certs',
  aliases: ['certificates', 'cert'],
  summary: 'Manage an app’s custom hostnames and their TLS certificates',
  examples: [
    'hangar certs import www.example.com --fullchain fullchain.pem --private-key privkey.pem -a acme',
    'hangar certs list -a acme',
  ],
  verbs: [importVerb, list, show, remove],
};
