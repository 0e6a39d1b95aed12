// Drives headless Chromium through the example apps as a person would, and prints what each
// page showed as one JSON object on stdout. tests/browser.rs asserts on it.
//
// usage: node examples.mjs <chat server> <chat server whose publishes fail> <notifications server>
import { launch } from "./launch.mjs";

const [chatBase, failingBase, notifyBase] = process.argv.slice(2);
const browser = await launch();

const online = (page) =>
  page.waitForFunction(() => document.getElementById("status").textContent === "online");
const messages = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("#log li")]
      .filter((li) => !li.classList.contains("notice"))
      .map((li) => li.textContent),
  );
const notices = (page) =>
  page.evaluate(() =>
    [...document.querySelectorAll("#log li.notice")].map((li) => li.textContent),
  );

async function post(url, body) {
  const answer = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return answer.status;
}

const results = {};
try {
  const context = await browser.newContext();

  // A message the server refuses stays in the box, and the page says why.
  const page = await context.newPage();
  await page.goto(`${chatBase}/?room=refusals&user=pat`);
  await online(page);
  const long = "x".repeat(2500);
  await page.fill("#text", long);
  await page.click("button");
  await page.waitForFunction(() => document.getElementById("problem").textContent !== "");
  results.tooLong = {
    kept: (await page.inputValue("#text")) === long,
    problem: await page.textContent("#problem"),
    messages: await messages(page),
  };
  await page.close();

  const failing = await context.newPage();
  await failing.goto(`${failingBase}/?room=down&user=pat`);
  await failing.waitForFunction(() => document.getElementById("status").textContent !== "connecting…");
  await failing.fill("#text", "does this get through?");
  await failing.click("button");
  await failing.waitForFunction(() => document.getElementById("problem").textContent !== "");
  results.unavailable = {
    kept: await failing.inputValue("#text"),
    problem: await failing.textContent("#problem"),
  };
  await failing.close();

  // Presence never pushes messages out of a room's history: three messages, then people come
  // and go, then a late joiner sees the three messages.
  const host = await context.newPage();
  await host.goto(`${chatBase}/?room=busy&user=host`);
  await online(host);
  for (const text of ["first", "second", "third"]) {
    await host.fill("#text", text);
    await host.click("button");
    await host.waitForFunction((t) => document.getElementById("log").textContent.includes(t), text);
  }
  for (let i = 0; i < 6; i++) {
    const visitor = await context.newPage();
    await visitor.goto(`${chatBase}/?room=busy&user=visitor${i}`);
    await online(visitor);
    await visitor.close();
  }
  await host.waitForFunction(
    () => document.getElementById("log").textContent.includes("visitor5 left"),
    null,
    { timeout: 15000 },
  );
  const late = await context.newPage();
  await late.goto(`${chatBase}/?room=busy&user=late`);
  await online(late);
  await late.waitForFunction(() => document.getElementById("log").textContent.includes("third"));
  results.presence = {
    late: await messages(late),
    lateNotices: await notices(late),
    hostNotices: (await notices(host)).length,
  };
  await late.close();
  await host.close();

  // Notifications: carol was never online; what was sent to her is there when she signs in.
  // She closes the page, one more arrives, she opens it again (signed in still, and signing in
  // once more): exactly the three, once each.
  for (const title of ["one", "two"]) {
    if ((await post(`${notifyBase}/users/carol/notify`, { title, body: "b" })) !== 202) {
      throw new Error("notify failed");
    }
  }
  const shown = (p) =>
    p.evaluate(() => [...document.querySelectorAll("#list b")].map((b) => b.textContent));
  const watchCarol = async () => {
    const p = await context.newPage();
    await p.goto(`${notifyBase}/`);
    await p.fill("#user", "carol");
    await p.click("#signin");
    await p.waitForFunction(
      () =>
        document.getElementById("who").textContent === "carol" &&
        document.getElementById("status").textContent === "connected",
    );
    return p;
  };
  let carol = await watchCarol();
  await carol.waitForFunction(() => document.querySelectorAll("#list b").length >= 2);
  results.offline = { first: await shown(carol) };
  await carol.close();
  await post(`${notifyBase}/users/carol/notify`, { title: "three", body: "b" });
  carol = await watchCarol();
  await carol.waitForFunction(() => document.querySelectorAll("#list b").length >= 3);
  // Long enough for a duplicate to show up if the stream replayed what the page kept.
  await carol.waitForTimeout(500);
  results.offline.again = await shown(carol);
  await carol.click("#one");
  await carol.waitForFunction(() => document.getElementById("sent").textContent.startsWith("sent"));
  results.offline.sent = await carol.textContent("#sent");
  await carol.close();
} catch (err) {
  results.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}

console.log(JSON.stringify(results));
