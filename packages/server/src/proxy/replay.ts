import { parseGoDuration } from '../shared/duration.js';
import { proxyFailure } from './proxy-errors.js';

/**
 * `fly-replay` (fly-semantics §5.6), pure: the header form `k=v;k=v` (values may be quoted, so a quoted
 * value can hold `;` and `,`), the JSON form (`application/vnd.fly.replay+json`), and the headers the
 * proxy adds on the replayed request (`fly-replay-src`) and on a fallback (`fly-replay-failed`).
 */

export const REPLAY_JSON_TYPE = 'application/vnd.fly.replay+json';
/** Bodies up to this size are kept so that a request can be replayed (Fly's documented contract). */
export const REPLAYABLE_BODY_BYTES = 1024 * 1024;
export const MAX_REPLAYS = 10;
/** The JSON form is small; a bigger answer is not a replay instruction. */
export const MAX_REPLAY_JSON_BYTES = 64 * 1024;

export type ReplayFallback = 'force_self' | 'prefer_self';

export interface ReplayInstruction {
  app?: string;
  instance?: string;
  preferInstance?: string;
  regions: string[];
  /** Exclude the replaying machine from the next pick. */
  elsewhere: boolean;
  state?: string;
  timeoutMs?: number;
  fallback?: ReplayFallback;
}

const invalid = (why: string) => proxyFailure('PA03', `invalid fly-replay: ${why}`);

/** Splits on `;` outside double quotes and unquotes values. */
function fields(text: string): [string, string][] {
  const out: [string, string][] = [];
  let key = '';
  let value = '';
  let inValue = false;
  let quoted = false;
  const flush = () => {
    const name = key.trim().toLowerCase();
    if (name !== '' || value.trim() !== '') {
      if (!inValue || name === '') throw invalid(`"${key.trim()}" is not key=value`);
      out.push([name, quoted ? value : value.trim()]);
    }
    key = '';
    value = '';
    inValue = false;
    quoted = false;
  };
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (!inValue) {
      if (ch === '=') inValue = true;
      else if (ch === ';') flush();
      else key += ch;
      continue;
    }
    if (quoted) {
      if (ch === '\\' && i + 1 < text.length) value += text[++i];
      else if (ch === '"') quoted = false;
      else value += ch;
      continue;
    }
    if (ch === '"' && value.trim() === '') {
      quoted = true;
      value = '';
    } else if (ch === ';') flush();
    else value += ch;
  }
  if (quoted) throw invalid('unterminated quote');
  flush();
  return out;
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((part) => part.trim().toLowerCase())
    .filter((part) => part !== '');
}

function build(entries: Iterable<[string, unknown]>): ReplayInstruction {
  const instruction: ReplayInstruction = { regions: [], elsewhere: false };
  let any = false;
  for (const [key, raw] of entries) {
    if (raw === undefined || raw === null) continue;
    const value = typeof raw === 'string' ? raw : Array.isArray(raw) ? raw.join(',') : String(raw);
    any = true;
    switch (key) {
      case 'app':
        instruction.app = value.toLowerCase();
        break;
      case 'instance':
        instruction.instance = value;
        break;
      case 'prefer_instance':
        instruction.preferInstance = value;
        break;
      case 'region':
        instruction.regions = list(value);
        break;
      case 'elsewhere':
        if (value !== 'true' && value !== 'false') throw invalid('elsewhere must be true or false');
        instruction.elsewhere = value === 'true';
        break;
      case 'state':
        instruction.state = value;
        break;
      case 'timeout': {
        const ms = parseGoDuration(value);
        if (ms === undefined) throw invalid(`timeout "${value}" is not a duration such as 10s`);
        instruction.timeoutMs = ms;
        break;
      }
      case 'fallback':
        if (value !== 'force_self' && value !== 'prefer_self') {
          throw invalid('fallback must be force_self or prefer_self');
        }
        instruction.fallback = value;
        break;
      default:
        // Fields Hangar does not act on yet (transform, cache) are ignored, as unknown fields are.
        break;
    }
  }
  if (!any) throw invalid('no fields');
  if (instruction.instance !== undefined && instruction.preferInstance !== undefined) {
    throw invalid('instance and prefer_instance exclude each other');
  }
  return instruction;
}

export function parseReplayHeader(text: string): ReplayInstruction {
  return build(fields(text));
}

export function parseReplayJson(text: string): ReplayInstruction {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('the JSON body does not parse');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw invalid('the JSON body is not an object');
  }
  return build(Object.entries(value));
}

const quote = (value: string) => (/[;,"\s=]/.test(value) ? `"${value.replace(/["\\]/g, '\\$&')}"` : value);

/** `fly-replay-src` on the replayed request. */
export function replaySource(input: {
  instance: string;
  region: string;
  nowMs: number;
  state?: string;
}): string {
  const parts = [
    `instance=${input.instance}`,
    `region=${input.region}`,
    `t=${Math.round(input.nowMs * 1000)}`,
  ];
  if (input.state !== undefined) parts.push(`state=${quote(input.state)}`);
  return parts.join(';');
}

/** `fly-replay-failed` on a fallback delivery. */
export function replayFailed(input: {
  instance?: string;
  app?: string;
  regions: string[];
  source: string;
  reason: 'timeout' | 'retries_exhausted' | 'no_candidate';
  elapsedMs: number;
}): string {
  const parts: string[] = [];
  if (input.instance !== undefined) parts.push(`instance=${input.instance}`);
  if (input.app !== undefined) parts.push(`app=${input.app}`);
  if (input.regions.length > 0) parts.push(`region=${quote(input.regions.join(','))}`);
  parts.push(
    `replay_source=${input.source}`,
    `reason=${input.reason}`,
    `elapsed_ms=${Math.round(input.elapsedMs)}`,
  );
  return parts.join(';');
}
