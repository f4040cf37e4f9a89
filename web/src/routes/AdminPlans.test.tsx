import { planKeys } from "@/hooks/queries/plans";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, fireEvent, screen, waitFor, within } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { AdminPlans } from "./AdminPlans";
import { lastMonth, marginText, perRequestText } from "./AdminRevenue";

afterEach(() => {
  cleanup();
  vi.unstubAllGlobals();
});

const team = {
  key: "team",
  name: "Team",
  description: "",
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
};
const superAdmin = meAs("super_admin", ["self", "tenants:manage", "plans:manage"]);

describe("AdminPlans", () => {
  it("lists plans with their fee and limits, for the super admin only", () => {
    renderSignedIn(<AdminPlans />, superAdmin, "/admin/plans", [[planKeys.all, [team]]]);
    const row = screen.getByTestId("plan-team");
    expect(row.textContent).toContain("$49.00");
    expect(row.textContent).toContain("1 GiB");
    expect(row.textContent).toContain("cost + 30%");
    cleanup();
    renderSignedIn(<AdminPlans />, meAs("tenant_admin", ["self"]), "/admin/plans", [
      [planKeys.all, [team]],
    ]);
    expect(screen.getByText("Only a super admin manages plans.")).toBeTruthy();
  });

  it("shows the server's 409 naming the entitlement, and applies it anyway with force", async () => {
    const sent: { url: string; body: string }[] = [];
    const detail =
      "this change leaves 1 tenant(s) of the Team plan over it: acme (seats 3 > 2). " +
      "Nothing was changed.";
    vi.stubGlobal(
      "fetch",
      vi.fn(async (request: Request) => {
        if (request.method === "GET") return Response.json([team]);
        sent.push({ url: request.url, body: await request.text() });
        return request.url.includes("force=true")
          ? Response.json({ ...team, seats: 2 })
          : Response.json({ error: "Conflict", detail }, { status: 409 });
      }),
    );
    renderSignedIn(<AdminPlans />, superAdmin, "/admin/plans", [[planKeys.all, [team]]]);
    fireEvent.click(within(screen.getByTestId("plan-team")).getByRole("button", { name: "Edit" }));
    const dialog = screen.getByRole("dialog", { name: "Edit Team" });
    fireEvent.change(within(dialog).getByLabelText("Seats"), { target: { value: "2" } });
    fireEvent.click(within(dialog).getByRole("button", { name: "Save plan" }));
    await waitFor(() => expect(within(dialog).getByRole("alert").textContent).toBe(detail));
    expect(JSON.parse(sent[0]?.body ?? "")).toEqual({ seats: 2 });
    expect(sent[0]?.url).toContain("force=false");
    fireEvent.click(within(dialog).getByRole("button", { name: "Apply anyway" }));
    await waitFor(() => expect(screen.queryByRole("dialog")).toBeNull());
    expect(sent[1]?.url).toContain("force=true");
  });

  it("stops a malformed limit before it is sent", () => {
    renderSignedIn(<AdminPlans />, superAdmin, "/admin/plans", [[planKeys.all, [team]]]);
    fireEvent.click(screen.getByRole("button", { name: "Edit" }));
    const dialog = screen.getByRole("dialog", { name: "Edit Team" });
    fireEvent.change(within(dialog).getByLabelText("Knowledge bases"), {
      target: { value: "many" },
    });
    fireEvent.click(within(dialog).getByRole("button", { name: "Save plan" }));
    expect(within(dialog).getByRole("alert").textContent).toMatch(/^Knowledge bases/);
  });
});

describe("revenue figures", () => {
  it("defaults to the last whole month, across a year's turn", () => {
    expect(lastMonth(new Date("2027-01-15T00:00:00Z"))).toBe("2026-12");
  });

  it("reads margins and per-request costs from the API's decimal strings", () => {
    expect(marginText("0.7312")).toBe("73.1%");
    expect(marginText(null)).toBe("—");
    expect(perRequestText("0.000420")).toBe("$0.000420");
    expect(perRequestText("0.018000")).toBe("$0.0180");
  });
});
