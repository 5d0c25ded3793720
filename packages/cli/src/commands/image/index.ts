import type { Noun } from '../../command.js';
import push from './push.js';
import show from './show.js';

export const image: Noun = {
  name: 'image',
  aliases: ['images'],
  summary: 'Push images to the app’s space in Hangar’s registry and show what machines run',
  examples: ['hangar image push ./build/oci -a acme --tag v1', 'hangar image show -a acme'],
  verbs: [push, show],
};
