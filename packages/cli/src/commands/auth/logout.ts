import { defineVerb } from '../../command.js';
import { loginPath } from '../../login-store.js';

export default defineVerb({
  usage: 'logout',
  summary: 'Forget the stored login (URL and token)',
  examples: ['hangar auth logout'],
  async run({ io, out }) {
    const path = loginPath(io.env);
    if (path && io.removeFile(path)) out.line(`Removed the stored login (${path})`);
    else out.line('No stored login');
  },
});
