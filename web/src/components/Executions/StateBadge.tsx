import { Badge } from "@/components/ui/badge";

const TONES: Record<string, "neutral" | "green" | "red" | "amber"> = {
  succeeded: "green",
  failed: "red",
  cancelled: "red",
  budget_exceeded: "amber",
  timed_out: "amber",
  skipped: "amber",
  retrying: "amber",
};

/** An execution's or a sub-agent's state; work in progress is neutral. */
export function StateBadge({ state }: { state: string }) {
  return <Badge tone={TONES[state] ?? "neutral"}>{state.replace(/_/g, " ")}</Badge>;
}
