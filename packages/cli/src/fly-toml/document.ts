// A fly.toml file as parsed TOML plus where each key sits, so that every error can name its line.
// The parser (toml-eslint-parser) gives a syntax tree with source positions; its syntax errors carry the
// line too. Values are read from the tree once, into plain objects.

import { type AST, getStaticTOMLValue, ParseError, parseTOML } from 'toml-eslint-parser';
import { CliError } from '../errors.js';

/** A key path: table and key names, with array indexes for arrays of tables and arrays. */
export type KeyPath = ReadonlyArray<string | number>;

/** `http_service.checks[0].path` */
export function pathText(path: KeyPath): string {
  let text = '';
  for (const part of path) {
    if (typeof part === 'number') text += `[${part}]`;
    else text += text === '' ? part : `.${part}`;
  }
  return text;
}

/** A problem in a fly.toml file: `fly.toml line 12: http_service.internal_port: ...`. */
export class FlyTomlError extends CliError {
  readonly file: string;
  readonly lineNumber: number | undefined;
  readonly key: string | undefined;

  constructor(
    file: string,
    line: number | undefined,
    key: string | undefined,
    message: string,
    hint?: string,
  ) {
    const where = line === undefined ? file : `${file} line ${line}`;
    super(`${where}: ${key ? `${key}: ` : ''}${message}`, hint);
    this.name = 'FlyTomlError';
    this.file = file;
    this.lineNumber = line;
    this.key = key;
  }
}

export interface TomlDocument {
  /** The file's name as shown in messages. */
  file: string;
  root: Record<string, unknown>;
  /** The line where the key (or array element) at `path` is written, if it is written at all. */
  line(path: KeyPath): number | undefined;
}

function keyNames(key: AST.TOMLKey): string[] {
  return key.keys.map((k) => (k.type === 'TOMLBare' ? k.name : k.value));
}

export function parseTomlDocument(text: string, file = 'fly.toml'): TomlDocument {
  let program: AST.TOMLProgram;
  try {
    program = parseTOML(text);
  } catch (err) {
    if (err instanceof ParseError) {
      throw new FlyTomlError(file, err.lineNumber, undefined, `not valid TOML: ${err.message}`);
    }
    throw err;
  }
  const lines = new Map<string, number>();
  const record = (path: KeyPath, line: number) => {
    const text = pathText(path);
    if (!lines.has(text)) lines.set(text, line);
  };
  const visitValue = (node: AST.TOMLContentNode, path: KeyPath) => {
    if (node.type === 'TOMLInlineTable') {
      for (const kv of node.body) visitKeyValue(kv, path);
    } else if (node.type === 'TOMLArray') {
      node.elements.forEach((element, i) => {
        record([...path, i], element.loc.start.line);
        visitValue(element, [...path, i]);
      });
    }
  };
  const visitKeyValue = (kv: AST.TOMLKeyValue, prefix: KeyPath) => {
    const path = [...prefix, ...keyNames(kv.key)];
    record(path, kv.loc.start.line);
    visitValue(kv.value, path);
  };
  const top = program.body[0];
  for (const item of top.body) {
    if (item.type === 'TOMLKeyValue') {
      visitKeyValue(item, []);
    } else {
      record(item.resolvedKey, item.loc.start.line);
      for (const kv of item.body) visitKeyValue(kv, item.resolvedKey);
    }
  }
  const root = getStaticTOMLValue(program) as Record<string, unknown>;
  return { file, root, line: (path) => lines.get(pathText(path)) };
}
