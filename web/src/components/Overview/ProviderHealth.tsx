import { Badge } from "@/components/ui/badge";
import { DataTable } from "@/components/ui/data-table";
import { useMe } from "@/hooks/queries/auth";
import { useProviderHealth } from "@/hooks/queries/providers";
import { can } from "@/lib/permissions";

const BREAKER = {
  closed: { tone: "green", label: "healthy" },
  half_open: { tone: "amber", label: "trial call next" },
  open: { tone: "red", label: "circuit open" },
} as const;

/** Each provider's circuit breaker: open means calls skip it and fall back. */
export function ProviderHealth() {
  const { data: me } = useMe();
  const health = useProviderHealth(can(me, "providers:read"));
  if (!can(me, "providers:read")) return null;
  const query = {
    ...health,
    data: health.data && { items: health.data.providers, total: health.data.providers.length },
  };
  return (
    <section aria-label="Provider health">
      <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">Provider health</h2>
      <DataTable
        label="Providers"
        query={query}
        empty="No providers are configured."
        rowKey={(provider) => provider.name}
        rowTestId={(provider) => `provider-${provider.name}`}
        columns={[
          { header: "Provider", cell: (provider) => provider.name, className: "font-medium" },
          { header: "Kind", cell: (provider) => provider.kind },
          { header: "Models", cell: (provider) => provider.models.join(", ") },
          {
            header: "Circuit breaker",
            cell: (provider) => (
              <Badge tone={BREAKER[provider.breaker].tone}>{BREAKER[provider.breaker].label}</Badge>
            ),
          },
          {
            header: "Failures in a row",
            cell: (provider) =>
              provider.retry_in_s !== null && provider.retry_in_s !== undefined
                ? `${provider.consecutive_failures} (retry in ${Math.ceil(provider.retry_in_s)} s)`
                : provider.consecutive_failures,
          },
        ]}
      />
      <p className="mt-2 text-xs text-slate-500">As seen by the server process that answered.</p>
    </section>
  );
}
