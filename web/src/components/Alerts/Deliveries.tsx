import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable, Pager } from "@/components/ui/data-table";
import { ErrorState } from "@/components/ui/states";
import { DELIVERY_PAGE, useAlertDeliveries, useReplayDelivery } from "@/hooks/queries/alerts";
import { formatDateTime } from "@/lib/format";
import { useState } from "react";

const TONES = { delivered: "green", failed: "red", pending: "amber" } as const;

/** Every alert sent to every channel, newest first, with its outcome; any can be sent again. */
export function AlertDeliveries() {
  const [offset, setOffset] = useState(0);
  const deliveries = useAlertDeliveries(offset);
  const replay = useReplayDelivery();
  return (
    <div>
      {replay.isError ? <ErrorState error={replay.error} /> : null}
      <DataTable
        label="Deliveries"
        query={deliveries}
        empty="Nothing sent yet."
        rowKey={(delivery) => delivery.id}
        rowTestId={(delivery) => `delivery-${delivery.kind}`}
        columns={[
          { header: "Sent", cell: (delivery) => formatDateTime(delivery.created_at) },
          {
            header: "Alert",
            cell: (delivery) => (
              <div>
                <div className="font-medium">{delivery.kind}</div>
                <div className="text-xs text-slate-500">
                  {delivery.subject} · {delivery.period}
                  {delivery.replay_of ? " · replay" : ""}
                </div>
              </div>
            ),
          },
          {
            header: "To",
            className: "max-w-xs truncate",
            cell: (delivery) => delivery.target,
          },
          {
            header: "Status",
            cell: (delivery) => (
              <div>
                <Badge tone={TONES[delivery.status]}>{delivery.status}</Badge>
                <div className="text-xs text-slate-500">
                  {delivery.attempts} attempt{delivery.attempts === 1 ? "" : "s"}
                  {delivery.last_status_code ? ` · ${delivery.last_status_code}` : ""}
                  {delivery.status === "pending" && delivery.next_attempt_at
                    ? ` · next ${formatDateTime(delivery.next_attempt_at)}`
                    : ""}
                </div>
                {delivery.last_error && delivery.status !== "delivered" ? (
                  <div className="text-xs text-red-700">{delivery.last_error}</div>
                ) : null}
              </div>
            ),
          },
          {
            header: "",
            className: "text-right",
            cell: (delivery) =>
              delivery.channel_id ? (
                <Button
                  variant="secondary"
                  size="sm"
                  disabled={replay.isPending}
                  onClick={() => replay.mutate(delivery.id)}
                >
                  Replay
                </Button>
              ) : (
                <span className="text-xs text-slate-500">channel deleted</span>
              ),
          },
        ]}
      />
      {deliveries.data ? (
        <Pager
          offset={offset}
          pageSize={DELIVERY_PAGE}
          shown={deliveries.data.items.length}
          total={deliveries.data.total}
          onChange={setOffset}
          labels={["Newer", "Older"]}
        />
      ) : null}
    </div>
  );
}
