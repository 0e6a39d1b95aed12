// Drives headless Chromium against the servers started by tests/browser.rs and prints what the
// browser's own EventSource received, as one JSON object on stdout. The Rust test asserts on it.
//
// usage: node run.mjs <base url of the test server> <base url of the chat example>
//                     <base url of the server with a stream limit> <base url of the HTTPS server>
//                     <chat server 1> <proxy to chat server 2> <proxy control> (or "-" each)
import { cluster } from "./cluster.mjs";
import { launch } from "./launch.mjs";

const [base, chatBase, limitedBase, httpsBase, nodeOne, nodeTwo, control] = process.argv.slice(2);

// The HTTPS test server's certificate is self-signed, made for the run.
const browser = await launch(["--ignore-certificate-errors"]);

const results = {};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${base}/blank`);

  // Framing: every event the server sends, as the browser dispatches it.
  results.framing = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const got = [];
        const source = new EventSource("/framing");
        const record = (type) => (e) => {
          got.push({ type, data: e.data, lastEventId: e.lastEventId });
          if (type === "done") {
            source.close();
            resolve(got);
          }
        };
        source.onmessage = record("message");
        for (const type of ["custom", "other", "done"]) {
          source.addEventListener(type, record(type));
        }
        setTimeout(() => resolve({ timeout: got }), 15000);
      }),
  );

  // A failing stream: what the page's handlers see, and when the browser comes back.
  results.failing = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const out = { messages: [], streamErrors: [], onerrorCalls: 0, onerrorMessages: 0 };
        let failedAt = null;
        let opens = 0;
        const source = new EventSource("/failing");
        source.onmessage = (e) => {
          if (opens === 1) out.messages.push(e.data);
        };
        source.addEventListener("stream-error", (e) => {
          out.streamErrors.push(e.data);
          failedAt = performance.now();
        });
        source.onerror = (e) => {
          out.onerrorCalls += 1;
          if (e instanceof MessageEvent) out.onerrorMessages += 1;
        };
        source.onopen = () => {
          opens += 1;
          if (opens === 2) {
            out.reconnectAfterMs = performance.now() - failedAt;
            source.close();
            resolve(out);
          }
        };
        setTimeout(() => resolve({ timeout: true, ...out }), 15000);
      }),
  );

  // Resume: the server ends the stream every few events; the browser reconnects on its own with
  // Last-Event-ID, and must see every event exactly once, in order.
  results.resume = await page.evaluate(
    (total) =>
      new Promise((resolve) => {
        const data = [];
        let opens = 0;
        const source = new EventSource("/resume");
        source.onopen = () => {
          opens += 1;
        };
        source.onmessage = (e) => {
          data.push(e.data);
          if (data.length >= total) {
            source.close();
            resolve({ data, opens });
          }
        };
        setTimeout(() => resolve({ timeout: true, data, opens }), 30000);
      }),
    30,
  );

  // A 204 answer makes EventSource give up: closed, and no reconnection afterwards.
  results.stop = await page.evaluate(
    () =>
      new Promise((resolve) => {
        const source = new EventSource("/stop");
        let errors = 0;
        source.onerror = () => {
          errors += 1;
        };
        setTimeout(async () => {
          const hits = Number(await (await fetch("/stop-hits")).text());
          const probe = await fetch("/stop", { headers: { accept: "text/event-stream" } });
          resolve({ readyState: source.readyState, errors, hits, probe: probe.status });
        }, 1500);
      }),
  );

  // Four pages against a limit of two streams: each waits for its three events, then closes.
  const limitedPages = await Promise.all([0, 1, 2, 3].map(() => context.newPage()));
  await Promise.all(limitedPages.map((p) => p.goto(`${limitedBase}/blank`)));
  results.limited = await Promise.all(
    limitedPages.map((p) =>
      p.evaluate(
        () =>
          new Promise((resolve) => {
            const data = [];
            let opens = 0;
            const source = new EventSource("/limited");
            source.onopen = () => {
              opens += 1;
            };
            source.onmessage = (e) => {
              data.push(e.data);
              if (data.length === 3) {
                source.close();
                resolve({ data, opens });
              }
            };
            setTimeout(() => resolve({ timeout: true, data, opens }), 20000);
          }),
      ),
    ),
  );
  await Promise.all(limitedPages.map((p) => p.close()));

  // Ten EventSources on one page over HTTP/2 and TLS: all of them get their event.
  const tlsPage = await context.newPage();
  await tlsPage.goto(`${httpsBase}/blank`);
  results.tls = await tlsPage.evaluate(
    () =>
      new Promise((resolve) => {
        const protocol = performance.getEntriesByType("navigation")[0].nextHopProtocol;
        const data = [];
        const sources = [];
        for (let i = 0; i < 10; i += 1) {
          const source = new EventSource("/tls-events");
          sources.push(source);
          source.onmessage = (e) => {
            data.push(e.data);
            if (data.length === 10) {
              sources.forEach((s) => s.close());
              resolve({ protocol, data });
            }
          };
        }
        setTimeout(() => resolve({ timeout: true, protocol, data }), 15000);
      }),
  );
  await tlsPage.close();

  // The chat example: a message posted from one page appears in another.
  const ann = await context.newPage();
  const ben = await context.newPage();
  await ann.goto(`${chatBase}/?room=browser&user=ann`);
  await ben.goto(`${chatBase}/?room=browser&user=ben`);
  await ann.waitForFunction(() => document.getElementById("status").textContent === "online");
  await ben.waitForFunction(() => document.getElementById("status").textContent === "online");
  await ann.waitForFunction(() => document.getElementById("log").textContent.includes("ben joined"));
  await ann.fill("#text", "hello from ann");
  await ann.click("button");
  await ben.waitForFunction(
    () => document.getElementById("log").textContent.includes("ann: hello from ann"),
    null,
    { timeout: 10000 },
  );
  results.chat = {
    ben_log: await ben.evaluate(() => [...document.querySelectorAll("#log li")].map((li) => li.textContent)),
  };
  // Ben closes his tab: ann is told.
  await ben.close();
  await ann.waitForFunction(() => document.getElementById("log").textContent.includes("ben left"), null, {
    timeout: 10000,
  });
  results.chat.ann_log = await ann.evaluate(() =>
    [...document.querySelectorAll("#log li")].map((li) => li.textContent),
  );

  // Two chat servers sharing rooms through Redis: carol on the first, dave (through a proxy) on
  // the second; then dave's server goes away and his page reconnects to the first.
  if (nodeOne !== "-") {
    results.cluster = await cluster(context, nodeOne, nodeTwo, control);
  }
} catch (err) {
  results.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}

console.log(JSON.stringify(results));
