// An execution's figures (apiary/executions/figures.py), typed by the generated API schema.
import type { Schemas } from "@/api/client";

export type ExecutionFigures = Schemas["ExecutionFigures"];
export type Phase = Schemas["Phase"];
export type PhaseRow = Schemas["PhaseFigures"] & { name: Phase };

const RUN_ORDER = ["decompose", "subagents", "synthesize"] as const satisfies readonly Phase[];

/** The phases an execution has run, in run order (a phase not run is absent). */
export function phaseRows(figures: ExecutionFigures): PhaseRow[] {
  const phases = figures.phases ?? {};
  return RUN_ORDER.flatMap((name) => {
    const phase = phases[name];
    return phase ? [{ name, ...phase }] : [];
  });
}

/** Seconds for people: 0.42 s, 12.3 s, 2 min 5 s. */
export function formatSeconds(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 120) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}
