import { StateBadge } from "@/components/Executions/StateBadge";
import {
  EXECUTION_STATES,
  type FilterForm,
  noFilters,
  toQuery,
} from "@/components/Executions/filters";
import { Button } from "@/components/ui/button";
import { DataTable, Pager } from "@/components/ui/data-table";
import { Field, InputField } from "@/components/ui/form";
import { Select } from "@/components/ui/input";
import { PageHeader } from "@/components/ui/states";
import { useAllAgents } from "@/hooks/queries/agents";
import { EXECUTIONS_PAGE_SIZE, useExecutions } from "@/hooks/queries/executions";
import { formatSeconds } from "@/lib/figures";
import { formatDateTime, formatTokens, formatUsd } from "@/lib/format";
import { useState } from "react";
import { Link } from "react-router-dom";

export function Executions() {
  const agents = useAllAgents();
  const [form, setForm] = useState<FilterForm>(noFilters);
  const [offset, setOffset] = useState(0);
  const executions = useExecutions(toQuery(form), { offset });
  const set = (change: Partial<FilterForm>) => {
    setForm((current) => ({ ...current, ...change }));
    setOffset(0);
  };
  const agentName = (id: string | null | undefined) =>
    agents.data?.items.find((a) => a.id === id)?.name ?? "deleted agent";
  const filtered = Object.values(form).some(Boolean);

  return (
    <div>
      <PageHeader
        title="Executions"
        actions={
          <Link
            to="/run"
            className="inline-flex h-10 items-center rounded-md bg-slate-900 px-4 text-sm font-medium text-white hover:bg-slate-700"
          >
            New run
          </Link>
        }
      />
      <div className="mb-4 grid grid-cols-2 items-end gap-3 md:grid-cols-5">
        <Field id="filter-agent" label="Agent">
          <Select
            id="filter-agent"
            value={form.agentId}
            onChange={(e) => set({ agentId: e.target.value })}
          >
            <option value="">All agents</option>
            {agents.data?.items.map((agent) => (
              <option key={agent.id} value={agent.id}>
                {agent.name}
              </option>
            ))}
          </Select>
        </Field>
        <Field id="filter-state" label="State">
          <Select
            id="filter-state"
            value={form.state}
            onChange={(e) => set({ state: e.target.value })}
          >
            <option value="">All states</option>
            {EXECUTION_STATES.map((state) => (
              <option key={state} value={state}>
                {state.replace(/_/g, " ")}
              </option>
            ))}
          </Select>
        </Field>
        <InputField
          id="filter-from"
          label="From (UTC)"
          type="date"
          value={form.fromDay}
          onValue={(value) => set({ fromDay: value })}
        />
        <InputField
          id="filter-to"
          label="To (UTC)"
          type="date"
          value={form.toDay}
          onValue={(value) => set({ toDay: value })}
        />
        <Button variant="secondary" disabled={!filtered} onClick={() => set(noFilters)}>
          Clear filters
        </Button>
      </div>
      <DataTable
        label="Executions"
        query={executions}
        empty={filtered ? "No executions match these filters." : "No executions yet."}
        rowKey={(execution) => execution.id}
        columns={[
          {
            header: "Task",
            className: "max-w-md",
            cell: (execution) => (
              <Link
                to={`/executions/${execution.id}`}
                className="line-clamp-2 font-medium underline"
              >
                {execution.task}
              </Link>
            ),
          },
          { header: "Agent", cell: (execution) => agentName(execution.agent_id) },
          { header: "State", cell: (execution) => <StateBadge state={execution.state} /> },
          { header: "Started", cell: (execution) => formatDateTime(execution.created_at) },
          {
            header: "Wall time",
            cell: (execution) => formatSeconds(execution.figures.wall_s),
          },
          {
            header: "Tokens",
            cell: (execution) =>
              formatTokens(execution.prompt_tokens + execution.completion_tokens),
          },
          { header: "Cost", cell: (execution) => formatUsd(execution.cost_usd) },
        ]}
      />
      {executions.data ? (
        <Pager
          offset={offset}
          pageSize={EXECUTIONS_PAGE_SIZE}
          shown={executions.data.items.length}
          total={executions.data.total}
          onChange={setOffset}
          labels={["Newer", "Older"]}
        />
      ) : null}
    </div>
  );
}
