// An execution's `figures` (apiary/swarm/engine.py `figures()`), read from its untyped JSON.

export interface PhaseFigures {
  name: "decompose" | "subagents" | "synthesize";
  seconds: number;
  promptTokens: number;
  completionTokens: number;
  costUsd: number;
  calls: number;
}

export interface ExecutionFigures {
  wallS: number | null;
  criticalPathS: number | null;
  subagentTotalS: number | null;
  speedup: number | null;
  phases: PhaseFigures[];
}

const PHASES = ["decompose", "subagents", "synthesize"] as const;

function number(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function record(value: unknown): Record<string, unknown> {
  return value && typeof value === "object" && !Array.isArray(value)
    ? (value as Record<string, unknown>)
    : {};
}

export function readFigures(raw: unknown): ExecutionFigures {
  const figures = record(raw);
  const phases = record(figures.phases);
  return {
    wallS: number(figures.wall_s),
    criticalPathS: number(figures.critical_path_s),
    subagentTotalS: number(figures.subagent_total_s),
    speedup: number(figures.speedup),
    phases: PHASES.filter((name) => name in phases).map((name) => {
      const phase = record(phases[name]);
      return {
        name,
        seconds: number(phase.seconds) ?? 0,
        promptTokens: number(phase.prompt_tokens) ?? 0,
        completionTokens: number(phase.completion_tokens) ?? 0,
        costUsd: number(phase.cost_usd) ?? 0,
        calls: number(phase.calls) ?? 0,
      };
    }),
  };
}

/** Seconds for people: 0.42 s, 12.3 s, 2 min 5 s. */
export function formatSeconds(seconds: number | null): string {
  if (seconds === null) return "—";
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
