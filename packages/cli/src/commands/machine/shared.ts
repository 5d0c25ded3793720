import type { Machine } from '@hangar/sdk';
import { defineVerb, type VerbSpec } from '../../command.js';
import type { Ctx } from '../../context.js';

/** `repository:tag` as resolved by the server, else the image the config asked for. */
export function machineImage(m: Machine): string {
  const ref = m.image_ref;
  if (ref?.repository) return ref.tag ? `${ref.repository}:${ref.tag}` : ref.repository;
  return m.config?.image ?? '';
}

export interface MachineActionSpec<O> extends Pick<VerbSpec<O>, 'aliases' | 'options' | 'examples'> {
  /** The verb, e.g. `start`; it takes one or more machine ids. */
  name: string;
  summary: string;
  act(ctx: Ctx<O>, app: string, id: string): Promise<unknown>;
  /** What to print once a machine is done. */
  done(id: string): string;
}

/** start/stop/suspend/restart/destroy/cordon/uncordon: the same call on each id, in order. */
export function machineAction<O = object>(spec: MachineActionSpec<O>) {
  return defineVerb<O>({
    usage: `${spec.name} <id...>`,
    aliases: spec.aliases,
    summary: spec.summary,
    examples: spec.examples,
    app: true,
    options: spec.options,
    async run(ctx) {
      const app = ctx.app();
      for (const id of ctx.args(0)) {
        await spec.act(ctx, app, id);
        ctx.out.line(spec.done(id));
      }
    },
  });
}
