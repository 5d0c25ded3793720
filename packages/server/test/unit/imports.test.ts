// The import structure of the server: no cycle between files, and no import from a lower room (folder of
// packages/server/src) to a higher one or between siblings. Also keeps the SDK and the CLI off server code.
// Imports are read with TypeScript's own pre-processor, so `import type`, `export ... from`, side-effect
// imports and dynamic `import()` all count.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const PACKAGES = fileURLToPath(new URL('../../../', import.meta.url));
const SERVER_SRC = join(PACKAGES, 'server', 'src');

// The rooms of the server, bottom to top. A file may import from its own room and from any room on a lower
// level; on a level marked `siblings`, the rooms may not import each other either. A room is the first
// segment of a path under src (a folder, or a file directly in src). A room missing here fails the test:
// place a new one deliberately.
const LEVELS: { rooms: string[]; siblings?: boolean }[] = [
  // shared/ imports nothing else of the server.
  { rooms: ['shared'] },
  // sixpn/ (the address plan) shares level 0 with shared/ in the design and may import it, never the reverse.
  { rooms: ['sixpn'] },
  { rooms: ['config'] },
  { rooms: ['store', 'auth', 'secrets'] },
  // What the runtime needs of the network is an interface the runtime declares, wired in daemon.ts.
  { rooms: ['runtime', 'net', 'dns'], siblings: true },
  { rooms: ['machines'] },
  // The api, the proxy and the registry proxy are siblings: none imports another.
  { rooms: ['api', 'proxy', 'registry'], siblings: true },
  { rooms: ['daemon.ts', 'main.ts'] },
];

// Downward imports the levels allow but the design does not: [from, to].
const FORBIDDEN: [string, string][] = [
  // The api reaches the runtime only through the orchestrator (machines/).
  ['api', 'runtime'],
];

function tsFilesUnder(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return tsFilesUnder(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

function specifiersOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
  return info.importedFiles.map((ref) => ref.fileName);
}

// The file a relative specifier names (ES module style: `./x.js` is the source `./x.ts`), or undefined.
function resolveRelative(from: string, specifier: string): string | undefined {
  const base = resolve(dirname(from), specifier);
  const candidates = [base, base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')];
  return candidates.find((path) => path.endsWith('.ts') && existsSync(path));
}

interface Graph {
  files: string[];
  edges: Map<string, string[]>;
  unresolved: string[];
}

function importGraph(root: string): Graph {
  const files = tsFilesUnder(root).sort();
  const edges = new Map<string, string[]>();
  const unresolved: string[] = [];
  for (const file of files) {
    const targets: string[] = [];
    for (const specifier of specifiersOf(file)) {
      if (!specifier.startsWith('.')) continue;
      const target = resolveRelative(file, specifier);
      if (target === undefined) unresolved.push(`${relative(root, file)}: '${specifier}'`);
      else targets.push(target);
    }
    edges.set(file, [...new Set(targets)]);
  }
  return { files, edges, unresolved };
}

// Strongly connected components (Tarjan); every component with more than one file, or a file that imports
// itself, holds a cycle.
function cyclicComponents(graph: Graph): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let next = 0;
  const visit = (file: string): void => {
    index.set(file, next);
    low.set(file, next);
    next += 1;
    stack.push(file);
    onStack.add(file);
    for (const target of graph.edges.get(file) ?? []) {
      if (!index.has(target)) {
        visit(target);
        low.set(file, Math.min(low.get(file)!, low.get(target)!));
      } else if (onStack.has(target)) {
        low.set(file, Math.min(low.get(file)!, index.get(target)!));
      }
    }
    if (low.get(file) !== index.get(file)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== file);
    if (component.length > 1 || graph.edges.get(file)?.includes(file)) components.push(component);
  };
  for (const file of graph.files) if (!index.has(file)) visit(file);
  return components;
}

// One concrete cycle inside a component: the shortest way from its first file back to itself.
function cycleIn(component: string[], graph: Graph): string[] {
  const members = new Set(component);
  const start = [...component].sort()[0]!;
  const cameFrom = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const file = queue.shift()!;
    for (const target of graph.edges.get(file) ?? []) {
      if (!members.has(target)) continue;
      if (target === start) {
        const path = [file];
        while (path[0] !== start) path.unshift(cameFrom.get(path[0]!)!);
        return [...path, start];
      }
      if (!cameFrom.has(target)) {
        cameFrom.set(target, file);
        queue.push(target);
      }
    }
  }
  return component;
}

function roomOf(file: string): string {
  return relative(SERVER_SRC, file).split(sep)[0]!;
}

function levelOf(room: string): number {
  return LEVELS.findIndex((level) => level.rooms.includes(room));
}

// Why `file` may not import `target`, or undefined when it may.
function layeringViolation(file: string, target: string): string | undefined {
  const from = roomOf(file);
  const to = roomOf(target);
  if (from === to) return undefined;
  const fromLevel = levelOf(from);
  const toLevel = levelOf(to);
  if (toLevel > fromLevel) return `${from} may not import the higher ${to}`;
  if (toLevel === fromLevel && LEVELS[fromLevel]!.siblings) return `${from} may not import its sibling ${to}`;
  if (FORBIDDEN.some(([a, b]) => a === from && b === to)) return `${from} may not import ${to} (FORBIDDEN)`;
  return undefined;
}

const server = importGraph(SERVER_SRC);
const show = (file: string): string => relative(SERVER_SRC, file);

test('imports: every relative import of the server names a file that exists', () => {
  assert.ok(server.files.length > 50, `expected the server's sources under ${show(SERVER_SRC)}`);
  assert.deepEqual(server.unresolved, [], 'imports that name no file');
});

test('imports: every room of the server is placed in the layering table', () => {
  const unplaced = [...new Set(server.files.map(roomOf))].filter((room) => levelOf(room) === -1);
  assert.deepEqual(unplaced, [], 'rooms missing from LEVELS in this test; place each one');
});

test('imports: no cycle between the files of the server', () => {
  const cycles = cyclicComponents(server).map((component) => {
    const cycle = cycleIn(component, server);
    const others = component.filter((file) => !cycle.includes(file)).map(show);
    const tangle = others.length > 0 ? ` (tangled with ${others.sort().join(', ')})` : '';
    return `${cycle.map(show).join(' → ')}${tangle}`;
  });
  assert.deepEqual(cycles, [], 'import cycles');
});

test('imports: no import from a lower room to a higher one, or between siblings', () => {
  const violations: string[] = [];
  for (const [file, targets] of server.edges) {
    for (const target of targets) {
      const why = layeringViolation(file, target);
      if (why !== undefined) violations.push(`${show(file)} → ${show(target)} (${why})`);
    }
  }
  assert.deepEqual(violations, [], 'imports against the layering');
});

test('imports: the SDK and the CLI never import server code', () => {
  for (const name of ['sdk', 'cli']) {
    const root = join(PACKAGES, name, 'src');
    const offending: string[] = [];
    for (const file of tsFilesUnder(root)) {
      for (const specifier of specifiersOf(file)) {
        // A relative import may not leave the package's src (that is how one would reach the server).
        const leavesSrc =
          specifier.startsWith('.') && relative(root, resolve(dirname(file), specifier)).startsWith('..');
        const namesServer = specifier === '@hangar/server' || specifier.startsWith('@hangar/server/');
        if (leavesSrc || namesServer) offending.push(`${relative(PACKAGES, file)}: '${specifier}'`);
      }
    }
    assert.deepEqual(offending, [], `${name} imports from outside its own package`);
  }
});
