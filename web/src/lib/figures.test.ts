import { describe, expect, it } from "vitest";
import { formatSeconds, readFigures } from "./figures";

describe("readFigures", () => {
  it("reads the engine's figures, phases in run order", () => {
    const figures = readFigures({
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
    expect(figures).toMatchObject({ wallS: 3.2, criticalPathS: 3.0, speedup: 2.9 });
    expect(figures.phases.map((p) => p.name)).toEqual(["decompose", "synthesize"]);
    expect(figures.phases[0]).toMatchObject({ seconds: 0.5, promptTokens: 8, costUsd: 0.02 });
  });

  it("gives nulls for a run that has no figures yet", () => {
    expect(readFigures({})).toEqual({
      wallS: null,
      criticalPathS: null,
      subagentTotalS: null,
      speedup: null,
      phases: [],
    });
    expect(readFigures({ speedup: null, phases: "broken" }).phases).toEqual([]);
  });
});

describe("formatSeconds", () => {
  it.each([
    [null, "—"],
    [0.4213, "0.42 s"],
    [12.34, "12.3 s"],
    [125, "2 min 5 s"],
  ])("%s -> %s", (seconds, text) => {
    expect(formatSeconds(seconds)).toBe(text);
  });
});
