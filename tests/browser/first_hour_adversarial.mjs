// The notifications page as a person uses it when switching users, in headless Chromium; prints
// what the page showed as one JSON object. tests/first_hour_adversarial.rs asserts on it.
//
// usage: node first_hour_adversarial.mjs <notifications server>
import { launch } from "./launch.mjs";

const [notifyBase] = process.argv.slice(2);
const browser = await launch();

async function notify(user, title) {
  const answer = await fetch(`${notifyBase}/users/${user}/notify`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title, body: "b" }),
  });
  return answer.status;
}

const titles = (page) =>
  page.evaluate(() => [...document.querySelectorAll("#list b")].map((b) => b.textContent));

const results = {};
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${notifyBase}/`);
  await page.fill("#user", "alice");
  await page.click("#signin");
  await page.waitForFunction(() => document.getElementById("status").textContent === "connected");
  // Bob is offline with two pending notifications.
  await notify("bob", "for bob 1");
  await notify("bob", "for bob 2");
  // The person types "bob" in the box; before signing in as bob, one for alice arrives.
  await page.fill("#user", "bob");
  await notify("alice", "for alice");
  await page.waitForFunction(() => document.getElementById("list").textContent.includes("for alice"));
  await page.click("#signin");
  await page.waitForFunction(
    () =>
      document.getElementById("who").textContent === "bob" &&
      document.getElementById("status").textContent.startsWith("connected"),
  );
  // A live one after the switch: once it shows, whatever was replayed has shown too.
  await notify("bob", "for bob 3");
  await page.waitForFunction(() => document.getElementById("list").textContent.includes("for bob 3"));
  results.switch = {
    bob: await titles(page),
    bobStatus: await page.textContent("#status"),
    stored: await page.evaluate(() => ({
      shown: JSON.parse(localStorage.getItem("notifications:bob:shown") || "[]").map((n) => n.title),
      aliceShown: JSON.parse(localStorage.getItem("notifications:alice:shown") || "[]").map((n) => n.title),
    })),
  };
  await page.close();
} catch (err) {
  results.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}

console.log(JSON.stringify(results));
