import { constants } from 'node:os';

const SIGNALS = constants.signals as Record<string, number>;

/**
 * The one place signal names are normalised: `term`, `TERM`, `SIGTERM` and 15 all give "SIGTERM".
 * Numbers are accepted because fly-go's kill sends `{"signal": 9}`; undefined means Linux has no such signal.
 */
export function signalName(value: string | number): string | undefined {
  if (typeof value === 'number') return Object.keys(SIGNALS).find((name) => SIGNALS[name] === value);
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return signalName(Number(trimmed));
  const upper = trimmed.toUpperCase();
  const name = upper.startsWith('SIG') ? upper : `SIG${upper}`;
  return name in SIGNALS ? name : undefined;
}

/** The name of signal number `n` (a process killed by it exits with 128+n under tini). */
export function signalOfNumber(n: number): string {
  return signalName(n) ?? String(n);
}
