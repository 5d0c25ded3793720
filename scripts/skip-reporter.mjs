// A node:test reporter that writes one JSON line per skipped test ({file, name, reason}) for
// run-tests.mjs, which lists them after the run and checks them against expected-skips.json.
export default async function* skipReporter(source) {
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { skip, file, name } = event.data;
    if (skip === undefined || skip === false) continue;
    yield `${JSON.stringify({ file: file ?? '', name, reason: skip === true ? '' : String(skip) })}\n`;
  }
}
