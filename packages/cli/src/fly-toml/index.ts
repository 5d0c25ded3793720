export * from './app-config.js';
export { FlyTomlError, parseTomlDocument, pathText, type TomlDocument } from './document.js';
export * from './machine-configs.js';
export { formatDuration, parseDurationMs, parseSizeMb, splitCommand } from './units.js';
