import type { Ctx } from './context.js';
import { CliError } from './errors.js';

/**
 * Asks before something that loses data. `action` completes "refusing to ..." (e.g. "destroy app acme").
 * `--yes` skips the question; without a terminal to ask on, the command refuses instead of guessing.
 */
export async function confirm(ctx: Ctx<{ yes?: boolean }>, action: string): Promise<void> {
  if (ctx.opts.yes) return;
  if (!ctx.io.interactive) {
    throw new CliError(`refusing to ${action} without confirmation`, 'pass --yes to confirm');
  }
  const answer = await ctx.io.prompt(`${action[0]?.toUpperCase()}${action.slice(1)}? [y/N] `);
  if (!/^y(es)?$/i.test(answer.trim())) throw new CliError('cancelled, nothing was changed');
}
