import { alertKeys } from "@/hooks/queries/alerts";
import { billingKeys } from "@/hooks/queries/billing";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, fireEvent, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { Billing } from "./Billing";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

const page = (items: unknown[]) => ({ items, total: items.length, limit: 200, offset: 0 });
const plan = {
  plan: {
    key: "team",
    name: "Team",
    description: "A team building agents",
    monthly_fee_usd: "49.00",
    included_spend_usd: "25.00",
    included_tokens: null,
    overage: true,
    markup_pct: "30.00",
    seats: 10,
    max_subagents: 20,
    concurrent_executions: 10,
    knowledge_bases: 10,
    storage_bytes: 1073741824,
    requests_per_minute: 600,
    tokens_per_minute: 1000000,
    semantic_cache: true,
    oidc: false,
    audit_export: false,
    stripe_price_id: null,
    archived: false,
    updated_at: "2026-12-01T00:00:00Z",
  },
  currency: "USD",
  entitlements: [
    { entitlement: "seats", limit: 10, used: 9 },
    { entitlement: "knowledge_bases", limit: 10, used: 10 },
    { entitlement: "requests_per_minute", limit: 600, used: null },
  ],
  features: { semantic_cache: true, oidc: false, audit_export: false },
  period: {
    period: "2026-12",
    provider_cost_usd: "3.200000",
    billed_usd: "49.00",
    calls: 120,
    prompt_tokens: 9000,
    completion_tokens: 1000,
    executions: 4,
    storage_bytes: 2048,
  },
};
const invoice = {
  id: "00000000-0000-0000-0000-0000000000i1",
  number: "INV-000007",
  period: "2026-11",
  plan: "team",
  currency: "EUR",
  usd_rate: "0.92",
  tax_rate: "0",
  subtotal_minor: 4508,
  tax_minor: 0,
  total_minor: 4508,
  provider_cost_usd: "3.20",
  billed_usd: "49.00",
  calls: 120,
  prompt_tokens: 9000,
  completion_tokens: 1000,
  executions: 4,
  storage_bytes: 2048,
  issued_at: "2026-12-01T00:05:00Z",
  payment_status: "not_applicable",
  stripe_invoice_id: null,
};
const seed: [readonly unknown[], unknown][] = [
  [billingKeys.plan, plan],
  [billingKeys.settings, { currency: "EUR", currencies: ["EUR", "USD"] }],
  [
    billingKeys.payment,
    {
      mode: "invoice_only",
      customer_id: null,
      subscription_id: null,
      subscription_status: null,
      invoices_pending_sync: 0,
      invoices_open: 0,
      invoices_failed: 0,
    },
  ],
  [billingKeys.invoicePage(0), page([invoice])],
  [alertKeys.channelPage(0), page([])],
  [alertKeys.deliveries(0), { ...page([]), limit: 20 }],
];
const billingAdmin = meAs("billing_admin", [
  "self",
  "billing:read",
  "billing:write",
  "alerts:manage",
]);

describe("Billing", () => {
  it("shows the plan, a meter per entitlement, invoices and 'invoice only'", () => {
    renderSignedIn(<Billing />, billingAdmin, "/billing", seed);
    expect(screen.getByTestId("plan-name").textContent).toBe("Team");
    expect(screen.getByTestId("meter-seats").textContent).toContain("9 of 10");
    expect(screen.getByRole("meter", { name: "Seats" }).getAttribute("aria-valuenow")).toBe("90");
    // At its limit: said in red, so the tenant knows before the next one is refused.
    expect(screen.getByTestId("meter-knowledge_bases").textContent).toContain("10 of 10");
    expect(screen.getByTestId("meter-requests_per_minute").textContent).toContain("up to 600");
    expect(screen.getByTestId("invoice-INV-000007").textContent).toContain("€45.08");
    expect(screen.getByTestId("invoice-INV-000007").textContent).toContain("invoice only");
    expect(screen.getByTestId("payment-mode").textContent).toContain("Invoice only");
    expect((screen.getByLabelText("Invoice currency") as HTMLSelectElement).value).toBe("EUR");
    expect(screen.getByText("No alert channels yet: alerts reach no one.")).toBeTruthy();
  });

  it("shows Stripe's subscription state and failed payments when payments go through it", () => {
    renderSignedIn(<Billing />, billingAdmin, "/billing", [
      ...seed,
      [
        billingKeys.payment,
        {
          mode: "stripe",
          customer_id: "cus_1",
          subscription_id: "sub_1",
          subscription_status: "past_due",
          invoices_pending_sync: 0,
          invoices_open: 1,
          invoices_failed: 2,
        },
      ],
    ]);
    const payment = screen.getByTestId("payment-mode").textContent ?? "";
    expect(payment).toContain("Stripe");
    expect(payment).toContain("past_due");
    expect(payment).toMatch(/Failed payments2/);
    expect(payment).not.toContain("Invoice only");
  });

  it("tells a role without billing so, and shows none of it", () => {
    renderSignedIn(<Billing />, meAs("viewer", ["self", "members:read"]), "/billing", seed);
    expect(screen.getByText(/Your role does not include billing/)).toBeTruthy();
    expect(screen.queryByTestId("plan-name")).toBeNull();
    expect(screen.queryByRole("button", { name: "Add channel" })).toBeNull();
  });

  it("shows a new webhook's secret once, and never again after Done", async () => {
    const created = {
      id: "c1",
      kind: "webhook",
      target: "https://hooks.example.com/apiary",
      description: "",
      events: [],
      enabled: true,
      previous_secret_expires_at: null,
      created_at: "2026-12-04T10:00:00Z",
      updated_at: "2026-12-04T10:00:00Z",
    };
    const requests: { method: string; url: string; body: string }[] = [];
    vi.stubGlobal(
      "fetch",
      vi.fn(async (request: Request) => {
        requests.push({ method: request.method, url: request.url, body: await request.text() });
        if (request.method === "POST") {
          return Response.json({ ...created, secret: "whsec_shown_once" }, { status: 201 });
        }
        return Response.json(page([created]));
      }),
    );
    renderSignedIn(<Billing />, billingAdmin, "/billing", seed);
    fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    const dialog = screen.getByRole("dialog", { name: "Add alert channel" });
    fireEvent.change(within(dialog).getByLabelText("URL"), {
      target: { value: "https://hooks.example.com/apiary" },
    });
    fireEvent.click(within(dialog).getByRole("button", { name: "Add" }));
    expect((await screen.findByTestId("channel-secret")).textContent).toBe("whsec_shown_once");
    expect(JSON.parse(requests[0]?.body ?? "{}")).toMatchObject({
      kind: "webhook",
      target: "https://hooks.example.com/apiary",
    });
    fireEvent.click(screen.getByRole("button", { name: "Done" }));
    await screen.findByTestId("channel-https://hooks.example.com/apiary");
    expect(document.body.textContent).not.toContain("whsec_shown_once");
  });

  it("rotates a webhook's secret after confirming, and shows the new one once", async () => {
    const hook = {
      id: "c2",
      kind: "webhook",
      target: "https://hooks.example.com/b",
      description: "",
      events: [],
      enabled: true,
      previous_secret_expires_at: null,
      created_at: "2026-12-04T10:00:00Z",
      updated_at: "2026-12-04T10:00:00Z",
    };
    const posted: string[] = [];
    vi.stubGlobal("confirm", () => true);
    vi.stubGlobal(
      "fetch",
      vi.fn(async (request: Request) => {
        if (request.method !== "POST") return Response.json(page([hook]));
        posted.push(new URL(request.url).pathname);
        return Response.json({
          ...hook,
          secret: "whsec_rotated",
          previous_secret_expires_at: "2026-12-05T10:00:00Z",
        });
      }),
    );
    renderSignedIn(<Billing />, billingAdmin, "/billing", [
      ...seed,
      [alertKeys.channelPage(0), page([hook])],
    ]);
    const row = screen.getByTestId("channel-https://hooks.example.com/b");
    fireEvent.click(within(row).getByRole("button", { name: "Rotate secret" }));
    const dialog = await screen.findByRole("dialog", { name: "New signing secret" });
    expect(within(dialog).getByTestId("channel-secret").textContent).toBe("whsec_rotated");
    expect(dialog.textContent).toContain("2026-12-05 10:00 UTC");
    expect(posted).toEqual(["/api/v1/alerts/channels/c2/rotate-secret"]);
    fireEvent.click(within(dialog).getByRole("button", { name: "Done" }));
    await waitFor(() => expect(document.body.textContent).not.toContain("whsec_rotated"));
  });

  it("shows the server's reason when it refuses a channel", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () =>
        Response.json(
          { error: "Unprocessable", detail: "target: host '10.0.0.5' is a private address" },
          { status: 422 },
        ),
      ),
    );
    renderSignedIn(<Billing />, billingAdmin, "/billing", seed);
    fireEvent.click(screen.getByRole("button", { name: "Add channel" }));
    const dialog = screen.getByRole("dialog", { name: "Add alert channel" });
    fireEvent.change(within(dialog).getByLabelText("URL"), {
      target: { value: "http://10.0.0.5/hook" },
    });
    fireEvent.click(within(dialog).getByRole("button", { name: "Add" }));
    await waitFor(() =>
      expect(within(dialog).getByRole("alert").textContent).toContain("private address"),
    );
  });
});
