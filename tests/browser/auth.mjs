// The notifications example's sign-in as a person uses it, in headless Chromium: prints what
// the pages showed as one JSON object. tests/auth_browser.rs starts the servers (and restarts
// them when the control server is asked to) and asserts on it.
//
// usage: node auth.mjs <cookies|tickets|expiry|revocation> <app> <control> [<page elsewhere>]
import { launch } from "./launch.mjs";

const [scenario, app, control, elsewhere] = process.argv.slice(2);
const browser = await launch();
// Generous: a stream that ends comes back after its come-back delay (up to 5 s), and a page
// that mints a new ticket waits one more second.
const WAIT = { timeout: 20000 };
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function notify(user, title) {
  const path = user === null ? "/notify" : `/users/${user}/notify`;
  const answer = await fetch(app + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title, body: "b" }),
  });
  if (answer.status !== 202) throw new Error(`notify ${user} ${title}: ${answer.status}`);
}

const titles = (page) =>
  page.evaluate(() => [...document.querySelectorAll("#list b")].map((b) => b.textContent));
const status = (page) => page.textContent("#status");
const who = (page) => page.textContent("#who");
const showing = (page, title) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll("#list b")].some((b) => b.textContent === t),
    title,
    WAIT,
  );
const says = (page, text) =>
  page.waitForFunction((t) => document.getElementById("status").textContent === t, text, WAIT);

// A new browser context (its own cookie jar) with the app's page, signed in as `user`.
async function signedIn(user) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${app}/`);
  await says(page, "signed out");
  await page.fill("#user", user);
  await page.click("#signin");
  await says(page, "connected");
  return { context, page };
}

async function anonymous(url) {
  const page = await (await browser.newContext()).newPage();
  await page.goto(url);
  return page;
}

// The status a page's own request for `user`'s stream gets (the stream is not read).
const streamStatus = (page, user) =>
  page.evaluate(async (u) => {
    const abort = new AbortController();
    const answer = await fetch(`/users/${u}/events`, {
      headers: { accept: "text/event-stream" },
      signal: abort.signal,
    });
    abort.abort();
    return answer.status;
  }, user);

async function cookies() {
  const alice = await signedIn("alice");
  const bob = await signedIn("bob");
  await notify("alice", "for alice");
  await notify("bob", "for bob");
  await notify(null, "for everyone");
  await showing(alice.page, "for everyone");
  await showing(bob.page, "for everyone");
  const nobody = await anonymous(`${app}/`);
  await says(nobody, "signed out");
  const jar = (await alice.context.cookies()).find((c) => c.name === "notifications_session");
  const before = {
    alice: await titles(alice.page),
    bob: await titles(bob.page),
    who: [await who(alice.page), await who(bob.page)],
    bobAsksForAlice: await streamStatus(bob.page, "alice"),
    nobodyAsksForAlice: await streamStatus(nobody, "alice"),
    cookie: { httpOnly: jar.httpOnly, sameSite: jar.sameSite },
    scriptSeesCookie: (await alice.page.evaluate(() => document.cookie)).includes("session"),
  };
  // The server stops (its streams end), two notifications arrive while it is down, and it
  // starts again on its port; the pages come back by themselves, with their cookies.
  const restart = await fetch(`${control}/restart/alice`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(["while down 1", "while down 2"]),
  });
  await notify("alice", "after the restart");
  await notify("bob", "bob after the restart");
  await showing(alice.page, "after the restart");
  await showing(bob.page, "bob after the restart");
  // Long enough for a duplicate to show up if the reconnect replayed what the page had.
  await sleep(500);
  return {
    before,
    restart: restart.status,
    alice: await titles(alice.page),
    bob: await titles(bob.page),
    statuses: [await status(alice.page), await status(bob.page)],
  };
}

async function tickets() {
  const { context, page } = await signedIn("alice");
  // Only the page on the other origin reads from here on.
  await page.close();
  const widget = await context.newPage();
  await widget.goto(`${elsewhere}/`);
  await says(widget, "connected");
  // The streams end every 2 s (their lifetime) while these arrive.
  for (let i = 1; i <= 8; i++) {
    await notify("alice", `n${i}`);
    await sleep(800);
  }
  await showing(widget, "n8");
  await sleep(500);
  // A ticket minted from that origin, redeemed without it (by this script): refused.
  const foreign = await widget.evaluate(async (base) => {
    const answer = await fetch(`${base}/tickets`, { method: "POST", credentials: "include" });
    return (await answer.json()).ticket;
  }, app);
  const foreignAnswer = await fetch(`${app}/users/alice/events?ticket=${foreign}`, {
    headers: { accept: "text/event-stream" },
  });
  // Signed out, the page elsewhere gets no ticket.
  const nobody = await anonymous(`${elsewhere}/`);
  await says(nobody, "signed out: sign in on the app, then reload");
  const shown = { titles: await titles(widget), who: await who(widget) };
  // Still reading (its streams keep ending, so it is "reconnecting…" now and then).
  await says(widget, "connected");
  return { ...shown, foreignTicket: foreignAnswer.status };
}

async function expiry() {
  const { page } = await signedIn("alice");
  // The session lasts 6 s and the page refreshes it every 3 s; each stream ends at the expiry
  // its session had when it opened, while these arrive.
  for (let i = 1; i <= 12; i++) {
    await notify("alice", `n${i}`);
    await sleep(700);
  }
  await showing(page, "n12");
  await sleep(500);
  const shown = { titles: await titles(page), who: await who(page) };
  // Still reading (its streams keep ending, so it is "reconnecting…" now and then).
  await says(page, "connected");
  return shown;
}

async function revocation() {
  const one = await signedIn("alice");
  const two = await signedIn("alice");
  const bob = await signedIn("bob");
  await notify("alice", "before");
  await showing(one.page, "before");
  await showing(two.page, "before");
  await one.page.click("#everywhere");
  const gone = "signed out everywhere: this page stopped reading";
  await says(one.page, gone);
  await says(two.page, gone);
  const requests = async () => Number(await (await fetch(`${control}/requests/alice`)).text());
  const after = [await requests()];
  // Longer than the longest come-back delay (5 s): a page that came back would show here.
  await sleep(6000);
  after.push(await requests());
  const stopped = {
    statuses: [await status(one.page), await status(two.page)],
    closed: await two.page.evaluate(() => source === null),
    signedInShown: await two.page.evaluate(() => !document.getElementById("signedin").hidden),
  };
  await notify("bob", "still here");
  await showing(bob.page, "still here");
  // Signing in again after the revocation is let through.
  await one.page.click("#signin");
  await says(one.page, "connected");
  await notify("alice", "signed in again");
  await showing(one.page, "signed in again");
  return { after, stopped, bob: await titles(bob.page), again: await titles(one.page) };
}

const scenarios = { cookies, tickets, expiry, revocation };
const results = {};
try {
  results[scenario] = await scenarios[scenario]();
} catch (err) {
  results.error = String(err && err.stack ? err.stack : err);
} finally {
  await browser.close();
}

console.log(JSON.stringify(results));
