import { defineVerb } from '../../command.js';

export default defineVerb({
  usage: 'release <ip...>',
  summary: 'Release IP addresses from an app',
  examples: ['hangar ips release fdaa:0:1:0:1::3 -a acme'],
  app: true,
  async run({ app, args, client, out }) {
    const name = app();
    for (const ip of args(0)) {
      await client().ipAssignments.release(name, ip);
      out.line(`Released ${ip} from ${name}`);
    }
  },
});
