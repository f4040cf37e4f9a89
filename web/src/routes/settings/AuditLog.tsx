import { Pager } from "@/components/ui/data-table";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { AUDIT_PAGE_SIZE, useAuditLog } from "@/hooks/queries/audit";
import { formatDateTime } from "@/lib/format";
import { useState } from "react";

export function AuditLog() {
  const [offset, setOffset] = useState(0);
  const log = useAuditLog(offset);

  return (
    <div>
      <PageHeader title="Audit log" />
      {log.isPending ? (
        <Loading what="Loading the audit log" />
      ) : log.isError ? (
        <ErrorState error={log.error} />
      ) : log.data.items.length === 0 ? (
        <Empty>Nothing has been recorded yet.</Empty>
      ) : (
        <>
          <Table aria-label="Audit log">
            <thead>
              <tr>
                <Th>#</Th>
                <Th>When</Th>
                <Th>Action</Th>
                <Th>Target</Th>
                <Th>Actor</Th>
                <Th>IP</Th>
              </tr>
            </thead>
            <tbody>
              {log.data.items.map((entry) => (
                <tr key={entry.seq}>
                  <Td>{entry.seq}</Td>
                  <Td>{formatDateTime(entry.created_at)}</Td>
                  <Td>
                    <code>{entry.action}</code>
                  </Td>
                  <Td>
                    {entry.target_type
                      ? `${entry.target_type} ${entry.target_id?.slice(0, 8) ?? ""}`
                      : "—"}
                  </Td>
                  <Td>
                    {entry.actor_user_id
                      ? `user ${entry.actor_user_id.slice(0, 8)}`
                      : entry.actor_api_key_id
                        ? `key ${entry.actor_api_key_id.slice(0, 8)}`
                        : "system"}
                  </Td>
                  <Td>{entry.ip ?? "—"}</Td>
                </tr>
              ))}
            </tbody>
          </Table>
          <Pager
            offset={offset}
            pageSize={AUDIT_PAGE_SIZE}
            shown={log.data.items.length}
            total={log.data.total}
            onChange={setOffset}
            labels={["Newer", "Older"]}
          />
        </>
      )}
    </div>
  );
}
