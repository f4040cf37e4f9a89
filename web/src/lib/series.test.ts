import { describe, expect, it } from "vitest";
import { pivotByDay } from "./series";

const row = (day: string, key: string | null, cost: number, tokens = 0) => ({
  day,
  key,
  cost_usd: cost,
  prompt_tokens: tokens,
  completion_tokens: 0,
});

describe("pivotByDay", () => {
  it("makes one point per day with a field per key, zero-filled", () => {
    const { points, keys } = pivotByDay(
      [row("2026-11-02", "gpt-4o", 1), row("2026-11-01", "gpt-4o", 2), row("2026-11-02", null, 3)],
      "cost_usd",
    );
    expect(keys).toEqual(["gpt-4o", "(none)"]);
    expect(points).toEqual([
      { day: "2026-11-01", "gpt-4o": 2, "(none)": 0 },
      { day: "2026-11-02", "gpt-4o": 1, "(none)": 3 },
    ]);
  });

  it("sums tokens and applies labels (e.g. API key names)", () => {
    const { points } = pivotByDay([row("2026-11-01", "k1", 0, 10)], "tokens", (key) =>
      key === "k1" ? "ci" : "?",
    );
    expect(points).toEqual([{ day: "2026-11-01", ci: 10 }]);
  });
});
