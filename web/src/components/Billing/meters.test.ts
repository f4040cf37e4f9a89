import { describe, expect, it } from "vitest";
import { formatBytes, formatMinor, formatUsdText, meterOf, paymentStatus } from "./meters";

const usage = (entitlement: string, used: number | null, limit: number | null) => ({
  entitlement,
  used,
  limit,
});

describe("meterOf", () => {
  it("fills a held entitlement against its limit", () => {
    expect(meterOf(usage("seats", 3, 10))).toEqual({
      entitlement: "seats",
      label: "Seats",
      text: "3 of 10",
      fill: 0.3,
      tone: "green",
    });
  });

  it("turns amber near the limit and red at it, never overflowing", () => {
    expect(meterOf(usage("knowledge_bases", 8, 10)).tone).toBe("amber");
    const over = meterOf(usage("knowledge_bases", 12, 10));
    expect(over.tone).toBe("red");
    expect(over.fill).toBe(1);
    expect(meterOf(usage("seats", 0, 0)).tone).toBe("red");
  });

  it("shows storage in bytes and rates as a ceiling with nothing to fill", () => {
    expect(meterOf(usage("storage_bytes", 1572864, 1073741824)).text).toBe("1.5 MiB of 1 GiB");
    const rate = meterOf(usage("tokens_per_minute", null, 1_000_000));
    expect(rate).toMatchObject({ label: "Tokens per minute", text: "up to 1M", fill: null });
  });

  it("says unlimited when the plan sets no limit", () => {
    expect(meterOf(usage("seats", 4, null)).text).toBe("4 (unlimited)");
    expect(meterOf(usage("requests_per_minute", null, null)).text).toBe("unlimited");
  });

  it("names an entitlement it does not know from its key", () => {
    expect(meterOf(usage("gpu_hours", 1, 2)).label).toBe("gpu hours");
  });
});

describe("money", () => {
  it("formats minor units in the invoice's currency", () => {
    expect(formatMinor(24900, "USD")).toBe("$249.00");
    expect(formatMinor(-2000, "EUR")).toBe("-€20.00");
    expect(formatMinor(2490, "JPY")).toBe("¥2,490");
  });

  it("reads the API's decimal strings", () => {
    expect(formatUsdText("249.00")).toBe("$249.00");
    expect(formatUsdText("0.000120")).toBe("$0.0001");
    expect(formatUsdText(null)).toBe("—");
  });

  it("sizes bytes in binary units", () => {
    expect(formatBytes(512)).toBe("512 B");
    expect(formatBytes(52428800)).toBe("50 MiB");
  });

  it("says 'invoice only' when payments do not go through Stripe", () => {
    expect(paymentStatus("not_applicable").label).toBe("invoice only");
    expect(paymentStatus("failed").tone).toBe("red");
    expect(paymentStatus("something new").label).toBe("something new");
  });
});
