import type { Schemas } from "@/api/client";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { useAgentVersions } from "@/hooks/queries/agents";
import { formatDateTime } from "@/lib/format";
import { useState } from "react";

function summary(definition: Schemas["AgentDefinition"]): string {
  const tools = definition.tools?.join(", ");
  return [
    `model ${definition.model ?? "?"}`,
    `up to ${definition.max_subagents ?? "?"} sub-agents`,
    tools ? `tools: ${tools}` : "no tools",
  ].join(" · ");
}

/** An agent's versions, newest first: every change to it is one. */
export function VersionsDialog({
  agent,
  onClose,
}: { agent: Schemas["Agent"]; onClose: () => void }) {
  const [versionsOffset, setVersionsOffset] = useState(0);
  const versions = useAgentVersions(agent.id, versionsOffset);
  return (
    <Dialog open title={`${agent.name}: version history`} onClose={onClose}>
      <div className="max-h-[70vh] overflow-y-auto">
        <DataTable
          label="Versions"
          query={versions}
          paging={{ offset: versionsOffset, onChange: setVersionsOffset }}
          empty="No versions."
          rowKey={(version) => version.id}
          columns={[
            { header: "Version", cell: (version) => `v${version.version}` },
            { header: "Saved", cell: (version) => formatDateTime(version.created_at) },
            {
              header: "Definition",
              cell: (version) => (
                <details>
                  <summary className="cursor-pointer">{summary(version.definition)}</summary>
                  <pre className="mt-2 whitespace-pre-wrap text-xs">
                    {JSON.stringify(version.definition, null, 2)}
                  </pre>
                </details>
              ),
            },
          ]}
        />
      </div>
    </Dialog>
  );
}
