// Twenty Chromium pages, each in a context of its own (so each has its own connection pool), on
// the node behind a switchable proxy. Once every page has a message, the control server is told
// to drain node A in waves and send new connections to node B (which rotates every stream at its
// lifetime); later, to stop publishing. Prints what each page's EventSource received.
//
// usage: node lifecycle.mjs <proxy base url> <control base url> <pages>
import { launch } from "./launch.mjs";

const [proxy, control, count] = process.argv.slice(2);
const browser = await launch();
const results = { pages: [] };
try {
  const pages = [];
  for (let i = 0; i < Number(count); i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${proxy}/blank`);
    pages.push(page);
  }
  // Every page opens its stream at the same moment: more than the budget lets in at once.
  const start = (page) =>
    page.evaluate(() => {
      window.got = { data: [], ids: [], opens: 0, errors: 0 };
      const source = new EventSource("/events");
      window.source = source;
      source.onopen = () => window.got.opens++;
      source.onerror = () => window.got.errors++;
      source.onmessage = (e) => {
        window.got.data.push(e.data);
        window.got.ids.push(e.lastEventId);
      };
    });
  await Promise.all(pages.map(start));
  const everyone = (check) =>
    Promise.all(pages.map((page) => page.waitForFunction(check, null, { timeout: 30000 })));
  await everyone(() => window.got.data.length > 0);
  await fetch(`${control}/drain`, { method: "POST" });
  // The wave (2 s), the come-back delays, then a lifetime rotation on B (3 s) for everyone.
  await new Promise((resolve) => setTimeout(resolve, 9000));
  const last = await (await fetch(`${control}/stop`, { method: "POST" })).text();
  await everyone(`window.got.data[window.got.data.length - 1] === ${JSON.stringify(last)}`);
  results.last = last;
  for (const page of pages) {
    results.pages.push(
      await page.evaluate(() => ({ ...window.got, readyState: window.source.readyState })),
    );
  }
} catch (e) {
  results.error = String(e && e.stack ? e.stack : e);
}
console.log(JSON.stringify(results));
await browser.close();
