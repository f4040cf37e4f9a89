// The dashboard in a real Chromium against a real `apiary serve` (see harness.mjs).
// Steps share one server and run in order: sign in, overview, API keys (create, see once,
// revoke), a /v1 call whose cost shows in analytics, a dialog's focus trap, a list paged to
// its last row, settings pages, a knowledge base, an agent, a swarm run watched live and its
// cost in analytics, a cancelled run, the execution history, a viewer, billing (a billing
// admin's plan and invoice, a tenant admin's webhook, the super admin's plans and revenue),
// the admin.
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import path from "node:path";
import { after, before, test } from "node:test";
import {
  ARTIFACTS,
  BILLING_ADMIN,
  TENANT_ADMIN,
  VIEWER,
  apiSignIn,
  startStack,
} from "./harness.mjs";

let stack;
let page;
// What the browser refused under the server's Content-Security-Policy, on any page.
const cspViolations = [];

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  stack = await startStack();
  const context = await stack.browser.newContext({ viewport: { width: 1280, height: 860 } });
  page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());
  page.on("console", (message) => {
    if (message.text().includes("Content Security Policy")) cspViolations.push(message.text());
  });
});

after(async () => {
  await stack?.stop();
});

const shot = (name) =>
  page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });

async function signIn(user) {
  await page.goto(`${stack.baseUrl}/sign-in`);
  await page.getByLabel("Email").fill(user.email);
  await page.getByLabel("Password").fill(user.password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.getByTestId("signed-in-as").waitFor();
  // Sign-in returns to the page that sent you there; the steps start from the overview.
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByRole("heading", { name: "Overview" }).waitFor();
}

/** A link of the main navigation (pages may have links of the same name). */
const navLink = (name) =>
  page.getByRole("navigation", { name: "Main" }).getByRole("link", { name, exact: true });

/** A call to the API as `token`, for setup steps; the response. */
const call = (token, method, url, body) =>
  fetch(`${stack.baseUrl}${url}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });

/** The last whole month, YYYY-MM (UTC). */
function lastMonth() {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - 1, 1))
    .toISOString()
    .slice(0, 7);
}

/** The figure labelled `label` once its query has answered (each figure has its own, which
 * may still be loading, "…", when the rest of the page is there); with `expected`, waits
 * until the figure reads that and fails if it never does. */
async function stat(label, expected) {
  const figure = page.getByTestId(`stat-${label}`);
  const deadline = Date.now() + 15_000;
  let shown = "";
  for (;;) {
    shown = (await figure.innerText()).trim();
    const settled = shown !== "…" && (expected === undefined || shown === expected);
    if (settled || Date.now() > deadline) break;
    await page.waitForTimeout(100);
  }
  if (expected !== undefined) assert.equal(shown, expected, `stat "${label}"`);
  assert.notEqual(shown, "…", `stat "${label}" never loaded`);
  return shown;
}

async function signOut() {
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByRole("heading", { name: "Sign in to Apiary" }).waitFor();
}

test("an unknown page without a session goes to sign-in; a wrong password shows the server's error", async () => {
  await page.goto(`${stack.baseUrl}/settings/api-keys`);
  await page.getByRole("heading", { name: "Sign in to Apiary" }).waitFor();
  // Password sign-in only: no OIDC issuer is configured, so no OIDC button.
  assert.equal(await page.getByRole("button", { name: /OIDC/ }).count(), 0);
  await shot("sign-in");
  await page.getByLabel("Email").fill(TENANT_ADMIN.email);
  await page.getByLabel("Password").fill("not the password");
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /password/i);
});

test("the tenant admin signs in and sees the overview", async () => {
  await signIn(TENANT_ADMIN);
  await page.getByRole("heading", { name: "Overview" }).waitFor();
  await page.getByTestId("stat-Spend").waitFor();
  await stat("Spend", "$0.00");
  await stat("Calls", "0");
  await page.getByText("No executions yet", { exact: false }).waitFor();
  await stat("Executions today", "0");
  const provider = page.getByTestId("provider-fake");
  await provider.getByText("healthy").waitFor();
  assert.match(await provider.innerText(), /gpt-4o-mini/);
  await shot("overview-empty");
});

let apiKey;

test("an API key is created, shown once, and listed without its secret", async () => {
  await page.getByRole("link", { name: "API keys" }).click();
  await page.getByText("No API keys yet.").waitFor();
  await page.getByRole("button", { name: "Create API key" }).click();
  await page.getByLabel("Name").fill("e2e-ci");
  await page.getByLabel("Role").selectOption("developer");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  apiKey = (await page.getByTestId("new-api-key").innerText()).trim();
  assert.match(apiKey, /^apy_/);
  await shot("api-key-created");
  await page.getByRole("button", { name: "Done" }).click();
  const row = page.getByTestId("api-key-e2e-ci");
  await row.waitFor();
  assert.ok(!(await page.content()).includes(apiKey), "the secret must not be shown again");
  assert.match(await row.innerText(), /active/);
  await shot("api-keys");
});

test("a /v1 call with that key shows its cost in analytics", async () => {
  const response = await fetch(`${stack.baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      model: "default",
      messages: [{ role: "user", content: "hello there" }],
    }),
  });
  assert.equal(response.status, 200, await response.text());
  const cost = Number(response.headers.get("x-apiary-cost-usd"));
  assert.ok(cost > 0, "the call is priced");

  await page.getByRole("link", { name: "Cost analytics" }).click();
  // The ledger is written in batches off the hot path: reload until the call shows.
  const deadline = Date.now() + 20_000;
  for (;;) {
    await page.getByTestId("stat-Calls").waitFor();
    if ((await page.getByTestId("stat-Calls").innerText()) === "1") break;
    assert.ok(Date.now() < deadline, "the call never reached the usage summary");
    await page.waitForTimeout(500);
    await page.reload();
  }
  const spend = await page.getByTestId("stat-Spend").innerText();
  assert.notEqual(spend, "$0.00");
  const totals = page.getByRole("table", { name: "Usage totals" });
  await totals.waitFor();
  assert.match(await totals.innerText(), /gpt-4o-mini/);
  await page.getByLabel("Group by").selectOption("api_key");
  await page.getByRole("table", { name: "Usage totals" }).getByText("e2e-ci").waitFor();
  await page.locator(".recharts-bar-rectangle").first().waitFor();
  await shot("analytics");
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Export CSV" }).click(),
  ]);
  const csv = readFileSync(await download.path(), "utf8");
  assert.match(csv, /gpt-4o-mini/, "the export holds the call's ledger row");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByTestId("stat-Calls").waitFor();
  await page.getByText("No executions yet", { exact: false }).waitFor();
  await stat("Calls", "1");
  await stat("Spend", spend);
  await shot("overview");
});

test("the key is revoked and stops working", async () => {
  await page.getByRole("link", { name: "API keys" }).click();
  const row = page.getByTestId("api-key-e2e-ci");
  await row.getByRole("button", { name: "Revoke" }).click();
  await row.getByText("revoked").waitFor();
  const response = await fetch(`${stack.baseUrl}/api/v1/auth/me`, {
    headers: { authorization: `Bearer ${apiKey}` },
  });
  assert.equal(response.status, 401);
});

test("a dialog traps focus, hides the page behind it, and Escape returns focus to its button", async () => {
  const opener = page.getByRole("button", { name: "Create API key" });
  await opener.focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog", { name: "Create API key" });
  await dialog.waitFor();
  const focusInDialog = () =>
    page.evaluate(() => !!document.activeElement?.closest("dialog[open]"));
  assert.equal(await page.evaluate(() => document.activeElement?.id), "key-name");
  // The page behind is inert and out of the accessibility tree.
  assert.equal(await page.locator("#root").getAttribute("inert"), "");
  assert.equal(await page.locator("#root").getAttribute("aria-hidden"), "true");
  assert.equal(await page.getByRole("link", { name: "Overview" }).count(), 0);
  const stops = await dialog.evaluate(
    (element) =>
      element.querySelectorAll("button:not([disabled]), input:not([disabled]), select").length,
  );
  // Round the dialog twice each way: focus never leaves it.
  for (let i = 0; i < stops * 2 + 1; i += 1) {
    await page.keyboard.press("Tab");
    assert.ok(await focusInDialog(), `Tab ${i + 1} left the dialog`);
  }
  for (let i = 0; i < stops * 2 + 1; i += 1) {
    await page.keyboard.press("Shift+Tab");
    assert.ok(await focusInDialog(), `Shift+Tab ${i + 1} left the dialog`);
  }
  await page.keyboard.press("Escape");
  await dialog.waitFor({ state: "detached" });
  assert.equal(
    await page.evaluate(() => document.activeElement?.textContent),
    "Create API key",
    "focus is back on the button that opened the dialog",
  );
  assert.equal(await page.locator("#root").getAttribute("inert"), null);
  await page.getByRole("link", { name: "Overview" }).waitFor();
});

test("a list longer than a page reaches its last row", async () => {
  const token = await apiSignIn(stack.baseUrl, TENANT_ADMIN);
  const names = Array.from({ length: 26 }, (_, n) => `paged-${String(n).padStart(2, "0")}`);
  for (const name of names) {
    const created = await call(token, "POST", "/api/v1/api-keys", { name, role: "viewer" });
    assert.equal(created.status, 201, await created.text());
  }
  await page.reload();
  const table = page.getByRole("table", { name: "API keys" });
  await table.waitFor();
  // 27 keys with the revoked one: a page of 25, then the last 2.
  await page.getByTestId("pager-range").getByText("1–25 of 27").waitFor();
  const seen = new Set();
  const collect = async () => {
    for (const id of await table
      .locator("tbody tr")
      .evaluateAll((rows) => rows.map((row) => row.dataset.testid))) {
      seen.add(id);
    }
  };
  await collect();
  await page.getByRole("button", { name: "Next" }).click();
  await page.getByTestId("pager-range").getByText("26–27 of 27").waitFor();
  await collect();
  assert.equal(
    await page.getByRole("button", { name: "Next" }).isDisabled(),
    true,
    "the last page",
  );
  await shot("api-keys-last-page");
  for (const name of [...names, "e2e-ci"]) assert.ok(seen.has(`api-key-${name}`), name);
  await page.getByRole("button", { name: "Previous" }).click();
  await page.getByTestId("pager-range").getByText("1–25 of 27").waitFor();
});

test("settings pages: members, budgets, routing, audit log", async () => {
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("table", { name: "Members" }).getByText(TENANT_ADMIN.email).waitFor();
  await page.getByRole("button", { name: "Add member" }).click();
  await page.getByLabel("Email").fill("not-an-email");
  await page.locator("#member-email").evaluate((input) => input.removeAttribute("type"));
  await page.getByRole("button", { name: "Add", exact: true }).click();
  const alert = page.getByRole("dialog").getByRole("alert");
  await alert.waitFor();
  assert.match(await alert.innerText(), /email/i, "the server's validation message is shown");
  await page.keyboard.press("Escape");
  await shot("members");

  await page.getByRole("link", { name: "Budgets & limits" }).click();
  await page.getByLabel("Monthly budget (USD)").fill("25");
  await page.getByRole("button", { name: "Save limits" }).click();
  await page.getByText("Saved.").waitFor();
  await shot("limits");

  await page.getByRole("link", { name: "Routing & providers" }).click();
  await page
    .getByRole("table", { name: "Models and routes" })
    .getByText("fake/gpt-4o-mini")
    .waitFor();
  await shot("routing");

  await page.getByRole("link", { name: "Audit log" }).click();
  const audit = page.getByRole("table", { name: "Audit log" });
  await audit.getByText("api_key.revoked").waitFor();
  await shot("audit-log");
});

test("a knowledge base: create, upload, ingestion status, search with citations", async () => {
  await page.getByRole("link", { name: "Knowledge bases" }).click();
  await page.getByText("No knowledge bases yet.").waitFor();
  await page.getByRole("button", { name: "Create knowledge base" }).click();
  await page.getByLabel("Name").fill("runbooks");
  await page.getByRole("button", { name: "Create", exact: true }).click();
  await page.getByRole("heading", { name: "runbooks" }).waitFor();
  await page.getByText("No documents yet.").waitFor();
  await page.locator("input[type=file]").setInputFiles({
    name: "deploy.md",
    mimeType: "text/markdown",
    buffer: Buffer.from(
      "# Deployment runbook\n\n## Rolling back\n\nTo roll back a deploy, run `apiary rollback` " +
        "with the previous release tag, then watch the error rate for ten minutes.\n",
    ),
  });
  const row = page.getByTestId("document-deploy.md");
  await row.waitFor();
  // Ingestion runs after the upload's commit; the page polls until the document is ready.
  await row.getByText("ready").waitFor({ timeout: 60_000 });
  await page.getByLabel("Search query").fill("how do I roll back a deploy?");
  await page.getByRole("button", { name: "Search", exact: true }).click();
  const citation = page.getByTestId("citation").first();
  await citation.waitFor();
  assert.match(await citation.innerText(), /deploy\.md — Deployment runbook > Rolling back/);
  assert.match(
    await page.getByRole("list", { name: "Search results" }).innerText(),
    /apiary rollback/,
  );
  await shot("knowledge-base");
});

test("an agent is created, edited into a second version, and shows its history", async () => {
  await page.getByRole("link", { name: "Agents" }).click();
  await page.getByText("No agents yet", { exact: false }).waitFor();
  await page.getByRole("button", { name: "Create agent" }).click();
  const dialog = page.getByRole("dialog");
  await dialog.getByLabel("Name").fill("trip planner");
  await dialog.getByLabel("Max sub-agents").fill("500");
  await dialog.getByRole("button", { name: "Create", exact: true }).click();
  assert.match(await dialog.getByRole("alert").innerText(), /1 to 100/);
  await dialog.getByLabel("Max sub-agents").fill("3");
  await dialog.getByLabel("Knowledge search").check();
  await dialog.getByLabel("runbooks").check();
  await dialog.getByRole("button", { name: "Create", exact: true }).click();
  const row = page.getByTestId("agent-trip planner");
  await row.waitFor();
  assert.match(await row.innerText(), /v1/);
  assert.match(await row.innerText(), /knowledge_search/);

  await row.getByRole("button", { name: "Edit" }).click();
  await dialog.getByLabel("Description").fill("plans trips in parallel");
  await dialog.getByRole("button", { name: "Save new version" }).click();
  await row.getByText("plans trips in parallel").waitFor();
  await row.getByRole("button", { name: "v2" }).click();
  const versions = page.getByRole("table", { name: "Versions" });
  await versions.getByText("v1").waitFor();
  await versions.getByText("v2").waitFor();
  await page.keyboard.press("Escape");
  await page.evaluate(() => document.activeElement?.blur());
  await shot("agents");
});

let executionUrl;

test("a swarm runs and its sub-agents are seen finishing live", async () => {
  await navLink("Run").click();
  await page
    .getByLabel("Agent", { exact: true })
    .selectOption({ label: "trip planner (v2, default)" });
  await page.getByLabel("Task").fill("Plan three days in Rome");
  await page.getByLabel("Max agents").fill("3");
  await page.getByLabel("Budget (USD)").fill("50");
  await shot("run");
  await page.getByRole("button", { name: "Start" }).click();
  await page.waitForURL(/\/executions\/[0-9a-f-]{36}$/);
  executionUrl = page.url();
  // Each upstream answer takes UPSTREAM_DELAY_S: the three sub-agents are seen running
  // together, before any has finished, then each finishing.
  const cards = page.locator("[data-testid^=subagent-]");
  await page.getByTestId("subagent-2").getByText("running").waitFor();
  assert.equal(await cards.count(), 3);
  assert.equal(await cards.getByText("succeeded").count(), 0, "none finished yet");
  await shot("run-live");
  for (const index of [0, 1, 2]) {
    await page.getByTestId(`subagent-${index}`).getByText("succeeded").waitFor();
  }
  await page.getByTestId("execution-state").getByText("succeeded").waitFor();
  assert.equal(await page.getByRole("button", { name: "Cancel" }).count(), 0);
  assert.match(await page.getByTestId("execution-answer").innerText(), /short answer/);
  assert.notEqual(await page.getByTestId("execution-cost").innerText(), "$0.00");
  // Figures and per-call ledger rows: decompose, three sub-agents, synthesize.
  const phases = page.getByRole("table", { name: "Phases" });
  await phases.getByText("Sub-agents").waitFor();
  assert.match(await page.getByTestId("stat-Speedup").innerText(), /×$/);
  const ledger = page.getByRole("table", { name: "Ledger" });
  await ledger.locator("tbody tr").nth(4).waitFor();
  assert.equal(await ledger.locator("tbody tr").count(), 5);
  assert.match(await ledger.innerText(), /fake\/gpt-4o-mini/);
  await page.getByRole("list", { name: "Timeline" }).getByText("planned 3 subtasks").waitFor();
  await shot("execution");
});

test("the run's cost shows in analytics, by agent", async () => {
  await page.getByRole("link", { name: "Cost analytics" }).click();
  await page.getByLabel("Group by").selectOption("agent");
  await page.getByRole("table", { name: "Usage totals" }).getByText("trip planner").waitFor();
  assert.ok(Number(await stat("Calls")) > 1, "the run's calls are counted");
  await page.getByRole("link", { name: "Overview" }).click();
  await page.getByRole("link", { name: "Plan three days in Rome" }).waitFor();
  await stat("Executions today", "1");
  await shot("overview-runs");
});

test("a run is cancelled from its page", async () => {
  await navLink("Run").click();
  await page.getByLabel("Task").fill("A run to cancel");
  await page.getByRole("button", { name: "Start" }).click();
  await page.waitForURL(/\/executions\/[0-9a-f-]{36}$/);
  await page.getByRole("button", { name: "Cancel" }).click();
  // Either the run ends cancelled, or the page shows why not (and the test says so).
  const cancelled = page.getByTestId("execution-state").getByText("cancelled");
  await cancelled.or(page.getByRole("alert")).first().waitFor();
  const alerts = page.getByRole("alert");
  if (await alerts.count()) assert.fail(`cancelling failed: ${await alerts.first().innerText()}`);
  await cancelled.waitFor();
});

test("the execution history filters by state and pages", async () => {
  await page.getByRole("link", { name: "Executions" }).click();
  const table = page.getByRole("table", { name: "Executions" });
  await table.getByText("Plan three days in Rome").waitFor();
  await table.getByText("A run to cancel").waitFor();
  assert.equal(await page.getByTestId("pager-range").innerText(), "1–2 of 2");
  await page.getByLabel("State").selectOption("succeeded");
  await page.getByTestId("pager-range").getByText("1–1 of 1").waitFor();
  assert.equal(await table.getByText("A run to cancel").count(), 0);
  await shot("executions");
  await page.getByLabel("State").selectOption("timed_out");
  await page.getByText("No executions match these filters.").waitFor();
  await page.getByRole("button", { name: "Clear filters" }).click();
  await table.getByText("A run to cancel").waitFor();
  const today = new Date().toISOString().slice(0, 10);
  await page.getByLabel("To (UTC)").fill(today); // the whole day, so today's runs are in
  await page.getByTestId("pager-range").getByText("1–2 of 2").waitFor();
  await page.getByLabel("From (UTC)").fill("2999-01-01");
  await page.getByText("No executions match these filters.").waitFor();
  await page.getByRole("button", { name: "Clear filters" }).click();
  await table.getByText("A run to cancel").waitFor();
  await table.getByText("Plan three days in Rome").click();
  await page.getByTestId("execution-state").getByText("succeeded").waitFor();
  assert.equal(page.url(), executionUrl);
});

test("a viewer sees no write buttons", async () => {
  const token = await apiSignIn(stack.baseUrl, TENANT_ADMIN);
  const added = await fetch(`${stack.baseUrl}/api/v1/members`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ email: VIEWER.email, role: "viewer", password: VIEWER.password }),
  });
  assert.equal(added.status, 201);
  await signOut();
  await signIn(VIEWER);
  await page.getByText("Your role does not include usage figures", { exact: false }).waitFor();
  const nav = await page.getByRole("navigation", { name: "Main" }).innerText();
  assert.ok(
    !nav.includes("API keys") && !nav.includes("Audit log") && !nav.includes("Cost analytics"),
  );
  await page.getByRole("link", { name: "Members" }).click();
  await page.getByRole("table", { name: "Members" }).getByText(VIEWER.email).waitFor();
  assert.equal(await page.getByRole("button", { name: "Add member" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Remove" }).count(), 0);
  assert.equal(await page.getByRole("combobox").count(), 0);
  await shot("viewer-members");
  // Typed by hand, the page still offers nothing to write, and the server refuses anyway.
  await page.goto(`${stack.baseUrl}/settings/api-keys`);
  await page.getByRole("alert").waitFor();
  assert.equal(await page.getByRole("button", { name: "Create API key" }).count(), 0);

  // Agents, executions and knowledge bases: readable, with no write buttons.
  assert.equal(await navLink("Run").count(), 0);
  await page.getByRole("link", { name: "Agents" }).click();
  await page.getByTestId("agent-trip planner").waitFor();
  for (const name of ["Create agent", "Edit", "Delete"]) {
    assert.equal(await page.getByRole("button", { name }).count(), 0, name);
  }
  await shot("viewer-agents");
  await page.goto(executionUrl);
  await page.getByTestId("execution-state").getByText("succeeded").waitFor();
  await page.getByRole("link", { name: "Knowledge bases" }).click();
  await page.getByRole("link", { name: "runbooks" }).click();
  await page.getByTestId("document-deploy.md").waitFor();
  assert.equal(await page.getByRole("button", { name: "Upload documents" }).count(), 0);
  assert.equal(await page.getByRole("button", { name: "Delete" }).count(), 0);
  // No Billing page: not in the navigation, and typed by hand it says why and shows nothing.
  assert.equal(await navLink("Billing").count(), 0);
  await page.goto(`${stack.baseUrl}/billing`);
  await page.getByText("Your role does not include billing", { exact: false }).waitFor();
  assert.equal(await page.getByTestId("plan-name").count(), 0);
  assert.equal(await page.getByRole("button", { name: "Add channel" }).count(), 0);
  await signOut();
});

let invoiceNumber;

test("a billing admin sees the plan's meters and downloads an invoice", async () => {
  // Through the API: acme moves to Premium, last month is closed into its invoice, and a
  // billing admin joins (the tenant admin, the viewer and the billing admin: three seats).
  const admin = await apiSignIn(stack.baseUrl, stack.superAdmin);
  const tenants = await (await call(admin, "GET", "/api/v1/tenants")).json();
  const acme = tenants.items.find((tenant) => tenant.name === "acme");
  const moved = await call(admin, "PATCH", `/api/v1/tenants/${acme.id}`, { plan: "premium" });
  assert.equal(moved.status, 200, await moved.text());
  const closed = await call(admin, "POST", "/api/v1/admin/billing/close", {
    period: lastMonth(),
  });
  const close = await closed.text();
  assert.equal(closed.status, 200, close);
  [invoiceNumber] = JSON.parse(close).issued;
  assert.ok(invoiceNumber, "closing last month issued acme's invoice");
  const owner = await apiSignIn(stack.baseUrl, TENANT_ADMIN);
  const added = await call(owner, "POST", "/api/v1/members", {
    email: BILLING_ADMIN.email,
    role: "billing_admin",
    password: BILLING_ADMIN.password,
  });
  assert.equal(added.status, 201, await added.text());

  await signIn(BILLING_ADMIN);
  await navLink("Billing").click();
  await page.getByTestId("plan-name").getByText("Premium").waitFor();
  assert.match(await page.getByTestId("meter-seats").innerText(), /3 of 50/);
  assert.match(await page.getByTestId("meter-knowledge_bases").innerText(), /1 of 100/);
  assert.match(await page.getByTestId("meter-tokens_per_minute").innerText(), /up to 5M/);
  assert.equal(await page.getByRole("meter", { name: "Seats" }).getAttribute("aria-valuenow"), "6");
  assert.match(await page.getByTestId("payment-mode").innerText(), /Invoice only/);
  const row = page.getByTestId(`invoice-${invoiceNumber}`);
  await row.waitFor();
  assert.match(await row.innerText(), new RegExp(`${lastMonth()}[\\s\\S]*\\$249\\.00`));
  assert.match(await row.innerText(), /invoice only/);
  await shot("billing");

  await row.getByRole("button", { name: invoiceNumber }).click();
  const dialog = page.getByRole("dialog", { name: `Invoice ${invoiceNumber}` });
  await dialog.getByRole("table", { name: "Invoice lines" }).getByText("Premium plan").waitFor();
  assert.equal(await dialog.getByTestId("invoice-total").innerText(), "$249.00");
  await shot("billing-invoice");
  const [pdf] = await Promise.all([
    page.waitForEvent("download"),
    dialog.getByRole("button", { name: "PDF" }).click(),
  ]);
  assert.equal(pdf.suggestedFilename(), `${invoiceNumber}.pdf`);
  assert.equal(
    readFileSync(await pdf.path())
      .subarray(0, 5)
      .toString(),
    "%PDF-",
  );
  const [csv] = await Promise.all([
    page.waitForEvent("download"),
    dialog.getByRole("button", { name: "CSV" }).click(),
  ]);
  assert.match(readFileSync(await csv.path(), "utf8"), /Premium plan/);
  await page.keyboard.press("Escape");
  await signOut();
});

test("a tenant admin adds a webhook channel, sees its secret once, and a signed test arrives", async () => {
  // A local receiver (the harness lets alerts call 127.0.0.1), keeping what it is sent.
  const received = [];
  const receiver = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => {
      body += chunk;
    });
    request.on("end", () => {
      received.push({ headers: request.headers, body });
      response.end("ok");
    });
  });
  await new Promise((resolve) => receiver.listen(0, "127.0.0.1", resolve));
  const url = `http://127.0.0.1:${receiver.address().port}/apiary-alerts`;
  try {
    await signIn(TENANT_ADMIN);
    await navLink("Billing").click();
    await page.getByText("No alert channels yet", { exact: false }).waitFor();
    await page.getByRole("button", { name: "Add channel" }).click();
    const dialog = page.getByRole("dialog", { name: "Add alert channel" });
    await dialog.getByLabel("URL").fill(url);
    await dialog.getByLabel("Invoice issued").check();
    await dialog.getByRole("button", { name: "Add", exact: true }).click();
    const secret = (await dialog.getByTestId("channel-secret").innerText()).trim();
    assert.match(secret, /^whsec_/);
    await shot("alert-channel-secret");
    await dialog.getByRole("button", { name: "Done" }).click();
    const row = page.getByTestId(`channel-${url}`);
    await row.waitFor();
    assert.match(await row.innerText(), /Invoice issued/);
    assert.ok(!(await page.content()).includes(secret), "the secret must not be shown again");

    await row.getByRole("button", { name: "Send test" }).click();
    const log = page.getByRole("table", { name: "Deliveries" });
    await log.getByText("delivered").waitFor({ timeout: 30_000 });
    assert.equal(received.length, 1);
    const [{ headers, body }] = received;
    const expected = createHmac("sha256", secret)
      .update(`${headers["apiary-webhook-timestamp"]}.${body}`)
      .digest("hex");
    assert.equal(headers["apiary-webhook-signature"], `v1=${expected}`, "signed with it");
    await shot("alert-deliveries");

    await log.getByRole("button", { name: "Replay" }).first().click();
    await log.locator("tbody tr").nth(1).waitFor();
    const deadline = Date.now() + 30_000;
    while (received.length < 2) {
      assert.ok(Date.now() < deadline, "the replay never arrived");
      await page.waitForTimeout(200);
    }
    assert.equal(received[1].headers["apiary-webhook-id"], headers["apiary-webhook-id"]);
    await signOut();
  } finally {
    receiver.close();
  }
});

test("the super admin edits a plan (an edit leaving a tenant over it is refused, named) and sees revenue", async () => {
  await signIn(stack.superAdmin);
  await navLink("Plans").click();
  const row = page.getByTestId("plan-premium");
  await row.getByRole("button", { name: "Edit" }).click();
  const dialog = page.getByRole("dialog", { name: "Edit Premium" });
  await dialog.getByLabel("Seats").fill("2");
  await dialog.getByRole("button", { name: "Save plan" }).click();
  const refusal = dialog.getByRole("alert");
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /acme \(seats 3 > 2\)/);
  await dialog.getByRole("button", { name: "Apply anyway" }).waitFor();
  await shot("admin-plan-refused");
  await dialog.getByLabel("Seats").fill("60");
  await dialog.getByRole("button", { name: "Save plan" }).click();
  await dialog.waitFor({ state: "detached" });
  assert.match(await row.innerText(), /60/);
  await shot("admin-plans");

  await navLink("Revenue & margin").click();
  const acme = page.getByTestId("revenue-acme");
  await acme.waitFor();
  assert.match(await acme.innerText(), /\$249\.00/);
  assert.match(await acme.innerText(), /100%/);
  await stat("Gross margin", "100%");
  await shot("admin-revenue");
  await signOut();
});

test("the super admin suspends and resumes a tenant", async () => {
  await signIn(stack.superAdmin);
  await page.getByText("signed in to the platform, not to a tenant", { exact: false }).waitFor();
  assert.equal(await page.getByRole("link", { name: "API keys" }).count(), 0);
  await page.getByRole("link", { name: "Tenants" }).click();
  const row = page.getByTestId("tenant-acme");
  await row.getByRole("button", { name: "Suspend" }).click();
  await row.getByText("suspended").waitFor();
  await shot("admin-tenants");
  await row.getByRole("button", { name: "Resume" }).click();
  await row.getByText("active").waitFor();
});

test("a reload keeps the session through the refresh cookie, with no token in storage", async () => {
  const cookie = async () =>
    (await page.context().cookies(`${stack.baseUrl}/api/v1/auth/refresh`)).find(
      (found) => found.name === "apiary_refresh",
    );
  const before = await cookie();
  assert.ok(before?.httpOnly, "the refresh token is an httpOnly cookie");
  await page.reload();
  await page.getByTestId("tenant-acme").waitFor();
  assert.notEqual((await cookie()).value, before.value, "refresh tokens rotate");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
  assert.doesNotMatch(stored, /eyJ|apr_/, "no token in localStorage or sessionStorage");
});

test("without a valid refresh cookie a reload goes back to sign-in", async () => {
  const [refresh] = (await page.context().cookies(`${stack.baseUrl}/api/v1/auth/refresh`)).filter(
    (found) => found.name === "apiary_refresh",
  );
  await page.context().addCookies([{ ...refresh, value: "apr_revoked" }]);
  await page.reload();
  await page.getByRole("heading", { name: "Sign in to Apiary" }).waitFor();
});

test("every page ran under the server's Content-Security-Policy without a refusal", async () => {
  const response = await page.goto(`${stack.baseUrl}/`);
  const policy = response.headers()["content-security-policy"];
  assert.match(policy, /script-src 'self';/);
  assert.match(policy, /frame-ancestors 'none'/);
  assert.equal(response.headers()["x-content-type-options"], "nosniff");
  assert.deepEqual(cspViolations, []);
});
