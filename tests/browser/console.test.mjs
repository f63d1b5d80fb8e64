// The operator console in a real browser: Debian's chromium (/usr/bin/chromium, or $CHROMIUM)
// driven by playwright-core, against a real `caly serve` (embedded SQLite, the Realtime
// simulator, the demo store) with calls made by a real `caly simulate`.
//
//   CALY_BIN=target/debug/caly node --test tests/browser/console.test.mjs
//
// Screenshots of each page go to $SCREENSHOT_DIR (docs/console for the README), else a
// temporary directory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

const root = resolve(import.meta.dirname, "../..");
const bin = resolve(root, process.env.CALY_BIN ||
  join(process.env.CARGO_TARGET_DIR || join(root, "target"), "debug", "caly"));
const work = mkdtempSync(join(tmpdir(), "caly-console-"));
const shots = process.env.SCREENSHOT_DIR ? resolve(root, process.env.SCREENSHOT_DIR) : join(work, "shots");
mkdirSync(shots, { recursive: true });
const db = `sqlite://${join(work, "console.db")}`;

let server, browser, context, page, base, readKey, adminKey, port;
const requests = [];

function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => ok(p));
    });
  });
}

function createKey(name, scope) {
  const out = execFileSync(bin, ["apikey", "create", "--name", name, "--scope", scope, "--database-url", db], { encoding: "utf8" });
  return out.trim().split("\n").pop().trim();
}

async function waitReady() {
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(`${base}/readyz`);
      if (r.ok) return r.json();
    } catch (_) { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("caly serve did not become ready");
}

/** Runs `caly simulate` with `calls` calls of `seconds`; resolves when it exits. */
function simulate(calls, seconds) {
  return new Promise((ok, fail) => {
    const child = spawn(bin, ["simulate", "--url", `ws://127.0.0.1:${port}/v1/exotel/stream`,
      "--calls", String(calls), "--duration", String(seconds), "--stagger", "1"], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    child.stderr.on("data", (d) => { out += d; });
    child.on("error", fail);
    child.on("exit", (code) => (code === 0 ? ok(out) : fail(new Error(`caly simulate exited ${code}:\n${out}`))));
  });
}

async function shot(name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

before(async () => {
  port = await freePort();
  base = `http://127.0.0.1:${port}`;
  readKey = createKey("console-reader", "read");
  adminKey = createKey("console-admin", "admin");
  const env = { ...process.env, PORT: String(port), BIND: "127.0.0.1", DATABASE_URL: db, RUST_LOG: "warn" };
  for (const k of ["OPENAI_API_KEY", "SHOPIFY_STORE_DOMAIN", "SHOPIFY_ACCESS_TOKEN", "CALY_NO_DEMO_STORE"]) delete env[k];
  server = spawn(bin, ["serve"], {
    env,
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
  });
  server.stderr.on("data", () => {});
  const ready = await waitReady();
  assert.equal(ready.store, "demo", "the offline server acts on the demo store");
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on("request", (r) => requests.push({ url: r.url(), method: r.method(), body: r.postData() || "" }));
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
  rmSync(work, { recursive: true, force: true });
});

test("a wrong key is refused and nothing is signed in", async () => {
  await page.goto(`${base}/console`);
  await page.getByLabel("API key").fill("caly_00000000_" + "0".repeat(48));
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByText("That API key is not valid.").waitFor();
  assert.equal(await page.locator("#nav").isVisible(), false);
  const cookies = await context.cookies();
  assert.equal(cookies.filter((c) => c.name === "caly_session").length, 0);
  await shot("sign-in");
});

test("a read key signs in with an HttpOnly, SameSite=Strict session cookie", async () => {
  await page.getByLabel("API key").fill(readKey);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.locator("#nav").waitFor();
  await page.getByText("console-reader (read)").waitFor();
  const cookie = (await context.cookies()).find((c) => c.name === "caly_session");
  assert.ok(cookie, "a session cookie is set");
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, "Strict");
  assert.notEqual(cookie.value, readKey, "the cookie is not the key");
  // The page's own script cannot read it, and nothing is kept in storage.
  assert.equal(await page.evaluate(() => document.cookie), "");
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);
});

test("a live call appears while caly simulate runs, and leaves when it ends", async () => {
  await page.goto(`${base}/console#/live`);
  await page.getByText("No calls right now").waitFor();
  const run = simulate(1, 14);
  const row = page.getByTestId("live-call");
  await row.first().waitFor({ timeout: 20_000 });
  // The caller is masked as the logs mask it.
  const caller = await row.first().locator("td").first().innerText();
  assert.match(caller, /^…\d{4}$/, `masked caller (its last four digits), got ${caller}`);
  // Its state moves as the conversation does: the bot speaks at some point.
  await page.locator('[data-testid="live-activity"]', { hasText: "bot speaking" }).first().waitFor({ timeout: 20_000 });
  await shot("live");
  await run;
  await row.first().waitFor({ state: "detached", timeout: 20_000 });
  await page.getByText("No calls right now").waitFor();
});

test("the call page shows the transcript, intents, actions and the latency chart", async () => {
  await simulate(2, 12);
  await page.goto(`${base}/console#/calls`);
  const rows = page.getByTestId("call-row");
  await rows.first().waitFor();
  assert.ok((await rows.count()) >= 3, "three simulated calls are listed");
  await rows.first().locator("a").first().click();
  const timeline = page.getByTestId("timeline");
  await timeline.waitFor();
  await timeline.locator('li[data-kind="caller"]').first().waitFor();
  await timeline.locator('li[data-kind="bot"]').first().waitFor();
  await timeline.locator('li[data-kind="intent"]').first().waitFor();
  const action = timeline.locator('li[data-kind="action"]').first();
  await action.waitFor();
  assert.match(await action.innerText(), /order status/i);
  const text = await timeline.innerText();
  assert.doesNotMatch(text, /[{][\s]*"/, "no raw JSON in the timeline");
  await page.locator('[data-testid="latency-chart"][data-rendered="true"] canvas').waitFor();
  await shot("call");
});

test("the call list filters and pages", async () => {
  await page.goto(`${base}/console#/calls`);
  await page.getByTestId("call-row").first().waitFor();
  const all = await page.getByTestId("call-row").count();
  // A filter no call matches.
  await page.getByTestId("filter-end_reason").selectOption("caller_silent");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.getByTestId("no-calls").waitFor();
  // One they all match.
  await page.getByTestId("filter-end_reason").selectOption("");
  await page.getByTestId("filter-intent").selectOption("order_status");
  await page.getByRole("button", { name: "Filter" }).click();
  await page.waitForFunction(() => (document.getElementById("view").dataset.shows || "").includes("intent=order_status"));
  await page.getByTestId("call-row").first().waitFor();
  assert.equal(await page.getByTestId("call-row").count(), all);
  await shot("calls");
  // Keyset paging: two a page, the next page from the API's cursor; no call twice, none lost.
  await page.goto(`${base}/console#/calls?limit=2`);
  // The list re-renders once its page has arrived; until then the previous rows are shown.
  await page.locator('#view[data-shows="#/calls?limit=2"]').waitFor();
  const first = await page.getByTestId("call-row").evaluateAll((rows) => rows.map((r) => r.dataset.callId));
  assert.equal(first.length, 2);
  await page.getByTestId("next-page").click();
  await page.waitForFunction(() => (document.getElementById("view").dataset.shows || "").includes("cursor="));
  const second = await page.getByTestId("call-row").evaluateAll((rows) => rows.map((r) => r.dataset.callId));
  assert.equal(second.length, all - 2);
  assert.equal(new Set([...first, ...second]).size, all);
});

test("the KPI charts render with data", async () => {
  await page.goto(`${base}/console#/kpis`);
  const facts = page.getByTestId("kpi-facts");
  await facts.waitFor();
  assert.match(await facts.innerText(), /Calls\s+3\b/);
  for (const id of ["chart-calls", "chart-containment", "chart-v2v", "chart-cost", "chart-end-reasons", "chart-intents", "chart-actions"]) {
    await page.locator(`[data-testid="${id}"][data-rendered="true"] canvas`).waitFor();
  }
  // The calls chart's numbers (its accessible table) add up to the calls made.
  const cells = await page.locator('[data-testid="chart-calls"] table tr td:nth-child(2)').allInnerTexts();
  assert.equal(cells.reduce((n, c) => n + Number(c || 0), 0), 3);
  await shot("kpis");
});

test("the console's requests carry no key in the URL", async () => {
  const withKey = requests.filter((r) => r.url.includes(readKey) || /[?&](key|api_key|token)=/i.test(r.url) || r.url.includes("caly_"));
  assert.deepEqual(withKey, []);
  // The key travelled once, in the sign-in body.
  const carrying = requests.filter((r) => r.body.includes(readKey));
  assert.equal(carrying.length, 1);
  assert.equal(carrying[0].method, "POST");
  assert.ok(carrying[0].url.endsWith("/v1/console/session"));
});

test("a session reads only, and signing out ends it", async () => {
  const cookie = (await context.cookies()).find((c) => c.name === "caly_session");
  const headers = { Cookie: `caly_session=${cookie.value}` };
  const calls = await (await fetch(`${base}/v1/calls?limit=1`, { headers })).json();
  const id = calls.items[0].id;
  // Even an admin key's session cannot erase a call or manage keys.
  const signIn = await fetch(`${base}/v1/console/session`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ key: adminKey }),
  });
  assert.equal(signIn.status, 201);
  const adminCookie = signIn.headers.get("set-cookie").split(";")[0];
  const asAdmin = { Cookie: adminCookie };
  assert.equal((await fetch(`${base}/v1/calls/${id}`, { method: "DELETE", headers: asAdmin })).status, 403);
  assert.equal((await fetch(`${base}/v1/apikeys`, { headers: asAdmin })).status, 403);
  assert.equal((await fetch(`${base}/v1/calls/${id}`, { headers: asAdmin })).status, 200);
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("Signed out.").waitFor();
  const afterOut = await fetch(`${base}/v1/calls?limit=1`, { headers });
  assert.equal(afterOut.status, 401);
  // The admin key still works as a bearer key.
  const stillThere = await fetch(`${base}/v1/calls/${id}`, { headers: { Authorization: `Bearer ${adminKey}` } });
  assert.equal(stillThere.status, 200);
});
