import { describe, expect, it } from "vitest";
import { budgetUsage, formatPercent, formatTokens, formatUsd, monthWindow } from "./format";

describe("formatUsd", () => {
  it("shows cents for ordinary amounts", () => {
    expect(formatUsd(1234.5)).toBe("$1,234.50");
    expect(formatUsd(0)).toBe("$0.00");
  });
  it("keeps sub-cent costs visible instead of rounding them to zero", () => {
    expect(formatUsd(0.0042)).toBe("$0.0042");
    expect(formatUsd(0.000015)).toBe("$0.000015");
  });
  it("signs negative savings", () => {
    expect(formatUsd(-2.5)).toBe("-$2.50");
  });
});

describe("formatTokens", () => {
  it("abbreviates thousands and millions", () => {
    expect(formatTokens(950)).toBe("950");
    expect(formatTokens(12_345)).toBe("12.3K");
    expect(formatTokens(4_000_000)).toBe("4M");
  });
});

describe("formatPercent", () => {
  it("turns a ratio into a percentage", () => {
    expect(formatPercent(0.256)).toBe("25.6%");
    expect(formatPercent(1)).toBe("100%");
  });
});

describe("monthWindow", () => {
  it("spans the UTC calendar month, across a year end", () => {
    expect(monthWindow(new Date("2026-12-15T10:00:00Z"))).toEqual({
      from: "2026-12-01T00:00:00.000Z",
      to: "2027-01-01T00:00:00.000Z",
    });
  });
});

describe("budgetUsage", () => {
  it("is null without a budget and clamps overspend to 1", () => {
    expect(budgetUsage(5, null)).toBeNull();
    expect(budgetUsage(5, 10)).toBe(0.5);
    expect(budgetUsage(15, 10)).toBe(1);
  });
});
