import type { Noun } from '../../command.js';
import clone from './clone.js';
import cordon from './cordon.js';
import destroy from './destroy.js';
import exec from './exec.js';
import leases from './leases.js';
import list from './list.js';
import logs from './logs.js';
import restart from './restart.js';
import run from './run.js';
import start from './start.js';
import status from './status.js';
import stop from './stop.js';
import suspend from './suspend.js';
import uncordon from './uncordon.js';
import update from './update.js';

export const machine: Noun = {
  name: 'machine',
  aliases: ['machines', 'm'],
  summary: 'Manage machines',
  examples: ['hangar machine list -a acme'],
  verbs: [
    run,
    list,
    status,
    logs,
    exec,
    update,
    clone,
    start,
    stop,
    suspend,
    restart,
    destroy,
    cordon,
    uncordon,
    leases,
  ],
};
