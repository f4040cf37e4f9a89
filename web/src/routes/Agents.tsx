import type { Schemas } from "@/api/client";
import { AgentDialog } from "@/components/Agents/AgentDialog";
import { VersionsDialog } from "@/components/Agents/VersionsDialog";
import { Can } from "@/components/Auth/Can";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { ErrorState, PageHeader } from "@/components/ui/states";
import { useAgents, useDeleteAgent } from "@/hooks/queries/agents";
import { useMe } from "@/hooks/queries/auth";
import { useAllKnowledgeBases } from "@/hooks/queries/knowledge";
import { formatDateTime, formatUsd } from "@/lib/format";
import { can } from "@/lib/permissions";
import { useState } from "react";
import { Link } from "react-router-dom";

type Agent = Schemas["Agent"];
type Open = { kind: "create" } | { kind: "edit" | "versions"; agent: Agent } | null;

export function Agents() {
  const { data: me } = useMe();
  const [agentsOffset, setAgentsOffset] = useState(0);
  const agents = useAgents(agentsOffset);
  const remove = useDeleteAgent();
  const bases = useAllKnowledgeBases();
  const baseNames = new Map(bases.data?.items.map((base) => [base.id, base.name]));
  const [open, setOpen] = useState<Open>(null);
  const mayWrite = can(me, "agents:write");
  const mayRun = can(me, "executions:run");

  return (
    <div>
      <PageHeader
        title="Agents"
        actions={
          <Can permission="agents:write">
            <Button onClick={() => setOpen({ kind: "create" })}>Create agent</Button>
          </Can>
        }
      />
      <p className="mb-4 text-sm text-slate-500">
        An agent is a prompt, a model or route, the tools its sub-agents may use and how many may
        run at once. Every change is kept as a new version; an execution records the one it ran.
      </p>
      {remove.isError ? <ErrorState error={remove.error} /> : null}
      <DataTable
        label="Agents"
        query={agents}
        paging={{ offset: agentsOffset, onChange: setAgentsOffset }}
        empty={mayWrite ? "No agents yet: create one to run a swarm." : "No agents yet."}
        rowKey={(agent) => agent.id}
        rowTestId={(agent) => `agent-${agent.name}`}
        columns={[
          {
            header: "Name",
            className: "font-medium",
            cell: (agent) => (
              <div>
                {agent.name}
                {agent.description ? (
                  <div className="text-xs font-normal text-slate-500">{agent.description}</div>
                ) : null}
              </div>
            ),
          },
          { header: "Model", cell: (agent) => <code>{agent.model}</code> },
          {
            header: "Tools",
            cell: (agent) =>
              agent.tools?.length ? (
                <div className="flex flex-wrap gap-1">
                  {agent.tools.map((tool) => (
                    <Badge key={tool}>{tool}</Badge>
                  ))}
                </div>
              ) : (
                "—"
              ),
          },
          {
            header: "Knowledge",
            cell: (agent) =>
              agent.knowledge_base_ids?.length
                ? agent.knowledge_base_ids.map((id) => baseNames.get(id) ?? "deleted").join(", ")
                : "—",
          },
          { header: "Sub-agents", cell: (agent) => agent.max_subagents },
          {
            header: "Cost cap",
            cell: (agent) => (agent.max_cost_usd ? formatUsd(agent.max_cost_usd) : "—"),
          },
          {
            header: "Version",
            cell: (agent) => (
              <Button
                variant="ghost"
                size="sm"
                onClick={() => setOpen({ kind: "versions", agent })}
              >
                v{agent.version}
              </Button>
            ),
          },
          {
            header: "Updated",
            className: "whitespace-nowrap",
            cell: (agent) => formatDateTime(agent.updated_at),
          },
          (mayWrite || mayRun) && {
            header: "",
            className: "whitespace-nowrap text-right",
            cell: (agent) => (
              <div className="flex justify-end gap-1">
                {mayRun ? (
                  <Link
                    to={`/run?agent=${agent.id}`}
                    className="inline-flex h-8 items-center rounded-md px-3 text-sm text-slate-700 hover:bg-slate-100"
                  >
                    Run
                  </Link>
                ) : null}
                {mayWrite ? (
                  <>
                    <Button
                      variant="secondary"
                      size="sm"
                      onClick={() => setOpen({ kind: "edit", agent })}
                    >
                      Edit
                    </Button>
                    <Button
                      variant="danger"
                      size="sm"
                      disabled={remove.isPending}
                      onClick={() => {
                        if (window.confirm(`Delete ${agent.name}? Its executions are kept.`)) {
                          remove.mutate(agent.id);
                        }
                      }}
                    >
                      Delete
                    </Button>
                  </>
                ) : null}
              </div>
            ),
          },
        ]}
      />
      {open?.kind === "create" ? <AgentDialog onClose={() => setOpen(null)} /> : null}
      {open?.kind === "edit" ? (
        <AgentDialog key={open.agent.id} agent={open.agent} onClose={() => setOpen(null)} />
      ) : null}
      {open?.kind === "versions" ? (
        <VersionsDialog agent={open.agent} onClose={() => setOpen(null)} />
      ) : null}
    </div>
  );
}
