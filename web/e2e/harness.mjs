// Starts what the end-to-end tests run against: the fake OpenAI upstream
// (bench/fake_upstream_server.py, slowed down) and a real `apiary serve` on free ports, with
// a temporary SQLite data dir, a tenant admin created through the CLI (its tenant backdated
// to the first of last month, so that month can be invoiced), and Debian's Chromium.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const VENV_BIN = path.join(REPO, ".venv", "bin");
export const CHROMIUM = process.env.APIARY_E2E_CHROMIUM ?? "/usr/bin/chromium";
export const ARTIFACTS = path.join(REPO, "web", "e2e", "artifacts");

export const TENANT_ADMIN = { email: "ops@acme.example", password: "e2e admin password" };
export const VIEWER = { email: "viewer@acme.example", password: "e2e viewer password" };
export const BILLING_ADMIN = { email: "billing@acme.example", password: "e2e billing password" };
export const UPSTREAM_DELAY_S = 1.5;

// The local identity provider of `startStack({ oidc: true })` (tests/auth/oidc_issuer.py):
// a confidential client, and an Azure AD style group that the settings map to tenant_admin.
export const OIDC_CLIENT = { id: "apiary-web", secret: "e2e client secret" };
export const OIDC_TID = "e2e-idp-tenant";
export const OIDC_ADMINS_GROUP = "0b7c5c8e-0000-4000-8000-00000000ad01";
export const OIDC_USER = {
  email: "ada@acme.example",
  sub: "ada-oid",
  tid: OIDC_TID,
  name: "Ada Lovelace",
  groups: [OIDC_ADMINS_GROUP],
};

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Spawn a process whose output is kept (not printed) for the failure message. */
function start(command, args, env) {
  const child = spawn(command, args, { cwd: REPO, env, stdio: ["ignore", "pipe", "pipe"] });
  child.output = "";
  child.stdout.on("data", (chunk) => {
    child.output += chunk;
  });
  child.stderr.on("data", (chunk) => {
    child.output += chunk;
  });
  return child;
}

async function waitFor(check, what, child, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`${what} exited with ${child.exitCode}:\n${child.output.slice(-2000)}`);
    }
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`${what} did not come up in ${timeoutMs} ms:\n${child.output.slice(-2000)}`);
}

function cli(args, env) {
  const result = spawnSync(path.join(VENV_BIN, "apiary"), args, {
    cwd: REPO,
    env,
    encoding: "utf8",
  });
  if (result.status !== 0) {
    throw new Error(`apiary ${args[0]} failed (${result.status}): ${result.stderr}`);
  }
  return result.stdout;
}

/** Start the local identity provider; its issuer URL. */
async function startIdentityProvider(children) {
  const idp = start(
    path.join(VENV_BIN, "python"),
    [
      "-m",
      "tests.auth.oidc_issuer",
      "--client-id",
      OIDC_CLIENT.id,
      "--client-secret",
      OIDC_CLIENT.secret,
      "--accounts",
      JSON.stringify([OIDC_USER]),
    ],
    process.env,
  );
  children.push(idp);
  let issuer = "";
  await waitFor(
    async () => {
      issuer = /ISSUER (\S+)/.exec(idp.output)?.[1] ?? "";
      return issuer !== "";
    },
    "the local identity provider",
    idp,
  );
  return issuer;
}

/** `oidc`: also run the local identity provider, configured as the dashboard's OIDC issuer
 * with acme linked to its tenant. */
export async function startStack({ oidc = false } = {}) {
  const dataDir = mkdtempSync(path.join(tmpdir(), "apiary-e2e-"));
  const children = [];
  const stop = async () => {
    for (const child of children.reverse()) {
      if (child.exitCode === null) {
        child.kill("SIGTERM");
        await new Promise((resolve) => child.once("exit", resolve));
      }
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    // Every answer takes a while, so a run's sub-agents can be watched working; a
    // decomposition asks for three subtasks.
    const upstream = start(
      path.join(VENV_BIN, "python"),
      ["bench/fake_upstream_server.py", "--delay", String(UPSTREAM_DELAY_S), "--subtasks", "3"],
      process.env,
    );
    children.push(upstream);
    let upstreamPort = 0;
    await waitFor(
      async () => {
        const match = /PORT (\d+)/.exec(upstream.output);
        if (match) upstreamPort = Number(match[1]);
        return upstreamPort > 0;
      },
      "the fake upstream",
      upstream,
    );

    const config = path.join(dataDir, "apiary.yaml");
    writeFileSync(
      config,
      [
        "providers:",
        "  - name: fake",
        "    kind: openai",
        `    base_url: http://127.0.0.1:${upstreamPort}/v1`,
        "    api_key: sk-fake-upstream", // the key tests/fakes/upstream.py accepts
        "    models: [gpt-4o-mini]",
        "routes:",
        "  default: {models: [fake/gpt-4o-mini]}",
        "prices:",
        // Dear on purpose, so one short call shows a visible cost.
        "  fake/gpt-4o-mini: {input: 1000, output: 2000}",
        "",
      ].join("\n"),
    );
    const port = await freePort();
    const issuer = oidc ? await startIdentityProvider(children) : null;
    const env = {
      ...process.env,
      APIARY_DATA_DIR: dataDir,
      APIARY_CONFIG: config,
      APIARY_LOG_LEVEL: "WARNING",
      // The tests' webhook receiver listens on 127.0.0.1, which alerts refuse by default.
      APIARY_ALERTS__ALLOW_PRIVATE_URLS: "true",
    };
    // SQLite in the temp dir and in-process throttles, whatever the calling shell set.
    for (const key of ["APIARY_DATABASE_URL", "APIARY_REDIS_URL"]) delete env[key];
    if (issuer) {
      Object.assign(env, {
        APIARY_OIDC__ISSUER: issuer,
        APIARY_OIDC__AUDIENCE: OIDC_CLIENT.id,
        APIARY_OIDC__CLIENT_SECRET: OIDC_CLIENT.secret,
        APIARY_OIDC__TENANT_ROLE_MAPS: JSON.stringify({
          [OIDC_TID]: { [OIDC_ADMINS_GROUP]: "tenant_admin" },
        }),
      });
    }

    const initOutput = cli(["init"], env);
    const superPassword = /password:\s+(\S+)/.exec(initOutput)?.[1];
    if (!superPassword) throw new Error("apiary init printed no super admin password");
    cli(
      [
        "admin",
        "create-tenant",
        "acme",
        // The unlimited plan: these tests drive the pages, not a plan's entitlements.
        "--plan",
        "enterprise",
        "--admin-email",
        TENANT_ADMIN.email,
        "--admin-password",
        TENANT_ADMIN.password,
      ],
      env,
    );
    // Created a month ago, so the tests have an ended month of it to invoice.
    const backdate = spawnSync(
      path.join(VENV_BIN, "python"),
      [path.join("web", "e2e", "backdate_tenant.py"), "acme"],
      { cwd: REPO, env, encoding: "utf8" },
    );
    if (backdate.status !== 0) throw new Error(`backdating acme failed: ${backdate.stderr}`);

    const server = start(path.join(VENV_BIN, "apiary"), ["serve", "--port", String(port)], env);
    children.push(server);
    const baseUrl = `http://127.0.0.1:${port}`;
    await waitFor(async () => (await fetch(`${baseUrl}/readyz`)).ok, "apiary serve", server);

    const superAdmin = { email: "admin@apiary.local", password: superPassword };
    if (issuer) await linkTenant(baseUrl, superAdmin, "acme", OIDC_TID);

    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    });
    return {
      baseUrl,
      browser,
      superAdmin,
      issuer,
      stop: async () => {
        await browser.close();
        await stop();
        // The server's warnings and errors, for when a step failed.
        writeFileSync(path.join(ARTIFACTS, "server.log"), server.output);
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Link a tenant to the identity provider's tenant, as the super admin does. */
async function linkTenant(baseUrl, superAdmin, name, tid) {
  const headers = {
    authorization: `Bearer ${await apiSignIn(baseUrl, superAdmin)}`,
    "content-type": "application/json",
  };
  const tenants = await (await fetch(`${baseUrl}/api/v1/tenants`, { headers })).json();
  const tenant = tenants.items.find((item) => item.name === name);
  const linked = await fetch(`${baseUrl}/api/v1/tenants/${tenant.id}`, {
    method: "PATCH",
    headers,
    body: JSON.stringify({ oidc_tenant_id: tid }),
  });
  if (!linked.ok) throw new Error(`linking ${name} failed: ${linked.status}`);
}

/** Sign in through the API (for setup steps the test is not about). */
export async function apiSignIn(baseUrl, user) {
  const response = await fetch(`${baseUrl}/api/v1/auth/login`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(user),
  });
  if (!response.ok) throw new Error(`sign-in failed: ${response.status}`);
  return (await response.json()).access_token;
}
