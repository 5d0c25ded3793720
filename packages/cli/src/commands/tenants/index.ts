import type { Noun } from '../../command.js';
import create from './create.js';
import destroy from './destroy.js';
import list from './list.js';
import show from './show.js';

export const tenants: Noun = {
  name: 'tenants',
  aliases: ['tenant'],
  summary: 'One app per customer: create, list, show and destroy them',
  examples: ['hangar tenants create acme --template web-template --router router', 'hangar tenants list'],
  verbs: [create, list, show, destroy],
};
