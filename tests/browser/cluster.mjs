// Two chat servers sharing their rooms through an engine (Redis or Postgres): carol on the
// first, dave (through a proxy) on the second; then the proxy moves dave to the first server,
// cutting his connection, and his page reconnects there. Returns what dave's page shows.
//
// As a script: node cluster.mjs <chat server 1> <proxy to chat server 2> <proxy control>
// prints {"cluster": ...} as one JSON object on stdout.
import { launch } from "./launch.mjs";

export async function cluster(context, nodeOne, nodeTwo, control) {
  const carol = await context.newPage();
  const dave = await context.newPage();
  await dave.addInitScript(() => {
    window.__opens = 0;
    const Original = window.EventSource;
    window.EventSource = function (url, init) {
      const source = new Original(url, init);
      source.addEventListener("open", () => window.__opens++);
      return source;
    };
  });
  await carol.goto(`${nodeOne}/?room=cluster&user=carol`);
  await dave.goto(`${nodeTwo}/?room=cluster&user=dave`);
  for (const p of [carol, dave]) {
    await p.waitForFunction(() => document.getElementById("status").textContent === "online");
  }
  const say = async (text) => {
    const res = await carol.evaluate(
      (text) =>
        fetch("/rooms/cluster/messages", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ user: "carol", text }),
        }).then((r) => r.status),
      text,
    );
    if (res !== 202) throw new Error(`post ${text}: ${res}`);
  };
  const daveHas = (text) =>
    dave.waitForFunction((t) => document.getElementById("log").textContent.includes(t), text, {
      timeout: 15000,
    });
  // Until dave's stream is live on the second server, a message may reach him as recent
  // history instead; wait for one that arrives live.
  await say("one");
  await daveHas("carol: one");
  const switched = await fetch(`${control}/switch`, { method: "POST" });
  if (!switched.ok) throw new Error("switch failed");
  await say("two while dave moves");
  await say("three while dave moves");
  await dave.waitForFunction(() => window.__opens >= 2, null, { timeout: 15000 });
  await say("four");
  await daveHas("carol: four");
  return {
    opens: await dave.evaluate(() => window.__opens),
    messages: await dave.evaluate(() =>
      [...document.querySelectorAll("#log li")]
        .filter((li) => !li.classList.contains("notice"))
        .map((li) => li.textContent),
    ),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [nodeOne, nodeTwo, control] = process.argv.slice(2);
  const browser = await launch([]);
  const results = {};
  try {
    results.cluster = await cluster(await browser.newContext(), nodeOne, nodeTwo, control);
  } catch (err) {
    results.error = String(err && err.stack ? err.stack : err);
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(results));
}
