// How verbs are declared and turned into commander commands. A verb file only says what is particular to
// it (usage, one-line summary, examples, its own flags, what it does); this module adds what all verbs
// share: -a/--app, --json, the Example: section of --help, and the context passed to `run`.

import { type Command, CommanderError } from 'commander';
import { type Ctx, createCtx, type GlobalOptions } from './context.js';
import type { CliIO } from './io.js';

export interface VerbSpec<O> {
  /** Commander usage: the verb name and its arguments, e.g. `create <name>` or `start <id...>`. */
  usage: string;
  aliases?: string[];
  /** One line, shown in the parent's command list and at the top of --help. */
  summary: string;
  /** Longer explanation for --help (defaults to the summary). */
  description?: string;
  /** Full command lines, shown under `Example:` in --help. */
  examples: string[];
  /** Adds `-a, --app <name>` (falls back to FLY_APP). */
  app?: boolean;
  /** Adds `-j, --json`. */
  json?: boolean;
  /** Declares the verb's own flags. */
  options?(cmd: Command): void;
  /** Resolves with nothing (exit 0) or an exit code, e.g. the remote command's for `machine exec`. */
  run(ctx: Ctx<O>): Promise<number | undefined> | Promise<void>;
}

/** A verb with its option type erased, so verbs of different shapes fit in one list. */
export type Verb = VerbSpec<Record<string, unknown>>;

export interface Noun {
  name: string;
  aliases?: string[];
  summary: string;
  examples: string[];
  verbs: Verb[];
}

/** Declares a verb; `O` types the parsed options its `run` sees. */
export function defineVerb<O = object>(spec: VerbSpec<O>): Verb {
  return spec as unknown as Verb;
}

export function exampleText(examples: string[]): string {
  return `\nExample:\n${examples.map((e) => `  $ ${e}`).join('\n')}\n`;
}

/** Adds a noun and its verbs under `program`. Subcommands are created with `.command()` so they inherit
 * the program's settings (exit override, output routing). */
export function registerNoun(program: Command, noun: Noun, io: CliIO): void {
  const nounCmd = program.command(noun.name).description(noun.summary);
  for (const alias of noun.aliases ?? []) nounCmd.alias(alias);
  nounCmd.addHelpText('after', exampleText(noun.examples));
  for (const verb of noun.verbs) registerVerb(nounCmd, verb, io);
}

/** Adds one verb under `parent`: a noun, or the program itself for top-level verbs (`status`, `logs`). */
export function registerVerb(parent: Command, verb: Verb, io: CliIO): void {
  const cmd = parent
    .command(verb.usage)
    .summary(verb.summary)
    .description(verb.description ?? verb.summary);
  for (const alias of verb.aliases ?? []) cmd.alias(alias);
  if (verb.app) cmd.option('-a, --app <name>', 'app name (default: $FLY_APP)');
  verb.options?.(cmd);
  if (verb.json) cmd.option('-j, --json', 'print JSON instead of a table');
  cmd.addHelpText('after', exampleText(verb.examples));
  cmd.action(async (...received: unknown[]) => {
    // Commander passes the positional arguments, the options, then the command itself.
    const self = received.at(-1) as Command;
    const opts = self.optsWithGlobals<Record<string, unknown> & GlobalOptions>();
    const code = await verb.run(createCtx(opts, self.processedArgs, io));
    // A verb's own non-zero status leaves through Commander, which run() turns into the exit code silently.
    if (typeof code === 'number' && code !== 0) throw new CommanderError(code, 'hangar.exit', '');
  });
}
