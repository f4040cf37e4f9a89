import type { Schemas } from "@/api/client";
import { describe, expect, it } from "vitest";
import { createBody, formFromPlan, updateBody } from "./planForm";

const premium: Schemas["Plan"] = {
  key: "premium",
  name: "Premium",
  description: "Swarms",
  monthly_fee_usd: "249.00",
  included_spend_usd: "150.00",
  included_tokens: null,
  overage: true,
  markup_pct: "20.00",
  seats: 50,
  max_subagents: 100,
  concurrent_executions: 50,
  knowledge_bases: 100,
  storage_bytes: 10737418240,
  requests_per_minute: 3000,
  tokens_per_minute: 5000000,
  semantic_cache: true,
  oidc: true,
  audit_export: true,
  stripe_price_id: null,
  archived: false,
  updated_at: "2026-12-01T00:00:00Z",
};

describe("plan form", () => {
  it("sends nothing for an untouched plan (money compared as amounts)", () => {
    const form = { ...formFromPlan(premium), monthlyFeeUsd: "249", markupPct: "20" };
    expect(updateBody(premium, form)).toEqual({ body: {}, error: null });
  });

  it("sends only the changed fields; an emptied limit becomes unlimited", () => {
    const form = formFromPlan(premium);
    form.limits.seats = "60";
    form.limits.knowledge_bases = "";
    form.features.oidc = false;
    expect(updateBody(premium, form).body).toEqual({
      seats: 60,
      knowledge_bases: null,
      oidc: false,
    });
  });

  it("names the field a person got wrong", () => {
    const form = formFromPlan(premium);
    form.limits.seats = "2.5";
    expect(updateBody(premium, form).error).toMatch(/^Seats/);
    expect(
      updateBody(premium, { ...formFromPlan(premium), monthlyFeeUsd: "12.345" }).error,
    ).toMatch(/^Monthly fee/);
    const capped = { ...formFromPlan(premium), overage: false, includedTokens: "1000" };
    expect(updateBody(premium, capped).error).toMatch(/^Included tokens/);
  });

  it("builds a complete create body, with a valid key", () => {
    const form = { ...formFromPlan(), key: "startup", name: "Startup", monthlyFeeUsd: "99" };
    form.limits.seats = "5";
    const { body, error } = createBody(form);
    expect(error).toBeNull();
    expect(body).toMatchObject({
      key: "startup",
      name: "Startup",
      monthly_fee_usd: "99",
      seats: 5,
      max_subagents: null,
      semantic_cache: false,
      overage: true,
    });
    expect(createBody({ ...form, key: "Start Up" }).error).toMatch(/^Key/);
  });
});
