import { describe, expect, it } from "vitest";
import { formatSeconds, phaseRows } from "./figures";

describe("phaseRows", () => {
  it("lists the engine's phases in run order", () => {
    const rows = phaseRows({
      wall_s: 3.2,
      critical_path_s: 3.0,
      subagent_total_s: 6.1,
      speedup: 2.9,
      phases: {
        synthesize: {
          seconds: 1,
          prompt_tokens: 10,
          completion_tokens: 5,
          cost_usd: 0.01,
          calls: 1,
        },
        decompose: {
          seconds: 0.5,
          prompt_tokens: 8,
          completion_tokens: 4,
          cost_usd: 0.02,
          calls: 1,
        },
      },
    });
    expect(rows.map((p) => p.name)).toEqual(["decompose", "synthesize"]);
    expect(rows[0]).toMatchObject({ seconds: 0.5, prompt_tokens: 8, cost_usd: 0.02 });
  });

  it("gives no rows for a run that has no figures yet", () => {
    expect(phaseRows({})).toEqual([]);
    expect(phaseRows({ phases: {} })).toEqual([]);
  });
});

describe("formatSeconds", () => {
  it.each([
    [null, "—"],
    [undefined, "—"],
    [0.4213, "0.42 s"],
    [12.34, "12.3 s"],
    [125, "2 min 5 s"],
  ])("%s -> %s", (seconds, text) => {
    expect(formatSeconds(seconds)).toBe(text);
  });
});
