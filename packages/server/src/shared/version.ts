/** hangard's version, kept in step with packages/server/package.json by hand (rootDir is src). */
export const HANGARD_VERSION = '0.1.0';
