import { Badge } from "@/components/ui/badge";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useMe } from "@/hooks/queries/auth";
import { useModels } from "@/hooks/queries/models";
import { can } from "@/lib/permissions";

/** Read-only: routes and provider models come from the server's configuration file. */
export function Routing() {
  const { data: me } = useMe();
  const mayCall = can(me, "gateway:call");
  const models = useModels(mayCall);

  return (
    <div>
      <PageHeader title="Routing & providers" />
      <p className="mb-4 text-sm text-slate-500">
        Routes and providers are set in the server's configuration file (<code>APIARY_CONFIG</code>
        ); this page is read-only. A route name chooses a model by policy, with fallbacks; a
        provider/model name calls that model directly.
      </p>
      {!mayCall ? (
        <Empty>Your role cannot call the gateway, so it has no models to list.</Empty>
      ) : models.isPending ? (
        <Loading what="Loading models" />
      ) : models.isError ? (
        <ErrorState error={models.error} />
      ) : models.data.length === 0 ? (
        <Empty>No models are configured.</Empty>
      ) : (
        <Table aria-label="Models and routes">
          <thead>
            <tr>
              <Th>Name to call</Th>
              <Th>Kind</Th>
              <Th>Provider</Th>
            </tr>
          </thead>
          <tbody>
            {models.data.map((model) => (
              <tr key={model.id}>
                <Td>
                  <code>{model.id}</code>
                </Td>
                <Td>
                  {model.owned_by === "apiary-route" ? (
                    <Badge tone="amber">route</Badge>
                  ) : (
                    <Badge>model</Badge>
                  )}
                </Td>
                <Td>{model.owned_by === "apiary-route" ? "by policy" : model.owned_by}</Td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
    </div>
  );
}
