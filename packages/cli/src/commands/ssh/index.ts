import type { Noun } from '../../command.js';
import console from './console.js';
import sftp from './sftp.js';

export const ssh: Noun = {
  name: 'ssh',
  summary: 'Shells and file copies in machines, through the API (no SSH server needed)',
  examples: ['hangar ssh console -a acme', 'hangar ssh sftp get /data/app.db -a acme'],
  verbs: [console, sftp],
};
