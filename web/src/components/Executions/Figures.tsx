import { Stat } from "@/components/ui/card";
import { Table, Td, Th } from "@/components/ui/table";
import { type ExecutionFigures, formatSeconds, phaseRows } from "@/lib/figures";
import { formatTokens, formatUsd } from "@/lib/format";

const PHASE_LABELS = { decompose: "Decompose", subagents: "Sub-agents", synthesize: "Synthesize" };

/** Wall time, critical path, speedup, and tokens and cost by phase, of a finished run. */
export function Figures({ figures }: { figures: ExecutionFigures }) {
  const phases = phaseRows(figures);
  const speedup = figures.speedup ?? null;
  return (
    <div className="space-y-4">
      <div className="grid grid-cols-2 gap-4 lg:grid-cols-4">
        <Stat label="Wall time" value={formatSeconds(figures.wall_s)} />
        <Stat
          label="Critical path"
          value={formatSeconds(figures.critical_path_s)}
          hint="decompose + slowest sub-agent + synthesize"
        />
        <Stat
          label="Speedup"
          value={speedup === null ? "—" : `${speedup.toFixed(2)}×`}
          hint="sub-agent time over the fan-out's wall time"
        />
        <Stat
          label="Sub-agent time"
          value={formatSeconds(figures.subagent_total_s)}
          hint="summed"
        />
      </div>
      {phases.length ? (
        <Table aria-label="Phases">
          <thead>
            <tr>
              <Th>Phase</Th>
              <Th>Wall time</Th>
              <Th>Calls</Th>
              <Th>Tokens in / out</Th>
              <Th>Cost</Th>
            </tr>
          </thead>
          <tbody>
            {phases.map((phase) => (
              <tr key={phase.name}>
                <Td>{PHASE_LABELS[phase.name]}</Td>
                <Td>{formatSeconds(phase.seconds)}</Td>
                {/* the engine counts sub-agents, not their calls, for this phase */}
                <Td>{phase.name === "subagents" ? `${phase.calls} agents` : phase.calls}</Td>
                <Td>
                  {formatTokens(phase.prompt_tokens)} / {formatTokens(phase.completion_tokens)}
                </Td>
                <Td>{formatUsd(phase.cost_usd)}</Td>
              </tr>
            ))}
          </tbody>
        </Table>
      ) : null}
    </div>
  );
}
