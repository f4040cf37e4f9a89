import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Dialog } from "@/components/ui/dialog";
import { Input, Label } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useMe } from "@/hooks/queries/auth";
import { useCreateTenant, useSetTenantStatus, useTenants } from "@/hooks/queries/tenants";
import { formatDateTime } from "@/lib/format";
import { type FormEvent, useState } from "react";

export function AdminTenants() {
  const { data: me } = useMe();
  const tenants = useTenants();
  const setStatus = useSetTenantStatus();
  const [creating, setCreating] = useState(false);

  if (!me?.is_super_admin) {
    return <Empty>Only a super admin manages tenants.</Empty>;
  }
  return (
    <div>
      <PageHeader
        title="Tenants"
        actions={<Button onClick={() => setCreating(true)}>Create tenant</Button>}
      />
      {setStatus.isError ? <ErrorState error={setStatus.error} /> : null}
      {tenants.isPending ? (
        <Loading what="Loading tenants" />
      ) : tenants.isError ? (
        <ErrorState error={tenants.error} />
      ) : tenants.data.items.length === 0 ? (
        <Empty>No tenants yet.</Empty>
      ) : (
        <Table aria-label="Tenants">
          <thead>
            <tr>
              <Th>Name</Th>
              <Th>Plan</Th>
              <Th>Status</Th>
              <Th>Created</Th>
              <Th />
            </tr>
          </thead>
          <tbody>
            {tenants.data.items.map((tenant) => (
              <tr key={tenant.id} data-testid={`tenant-${tenant.name}`}>
                <Td className="font-medium">{tenant.name}</Td>
                <Td>{tenant.plan}</Td>
                <Td>
                  <Badge tone={tenant.status === "active" ? "green" : "red"}>{tenant.status}</Badge>
                </Td>
                <Td>{formatDateTime(tenant.created_at)}</Td>
                <Td className="text-right">
                  {tenant.status === "active" ? (
                    <Button
                      variant="danger"
                      size="sm"
                      disabled={setStatus.isPending}
                      onClick={() => {
                        if (
                          window.confirm(`Suspend ${tenant.name}? Its users and keys stop working.`)
                        ) {
                          setStatus.mutate({ id: tenant.id, status: "suspended" });
                        }
                      }}
                    >
                      Suspend
                    </Button>
                  ) : (
                    <Button
                      variant="secondary"
                      size="sm"
                      disabled={setStatus.isPending}
                      onClick={() => setStatus.mutate({ id: tenant.id, status: "active" })}
                    >
                      Resume
                    </Button>
                  )}
                </Td>
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <CreateTenantDialog open={creating} onClose={() => setCreating(false)} />
    </div>
  );
}

function CreateTenantDialog({ open, onClose }: { open: boolean; onClose: () => void }) {
  const create = useCreateTenant();
  const [name, setName] = useState("");
  const [adminEmail, setAdminEmail] = useState("");
  const close = () => {
    create.reset();
    setName("");
    setAdminEmail("");
    onClose();
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate({ name: name.trim(), admin_email: adminEmail.trim() || null });
  };
  return (
    <Dialog open={open} title="Create tenant" onClose={close}>
      {create.data ? (
        <div className="space-y-4 text-sm">
          <p>Tenant {create.data.tenant.name} was created.</p>
          {create.data.admin_temporary_password ? (
            <p>
              Its admin's temporary password, shown once:{" "}
              <code className="rounded bg-slate-100 px-1">
                {create.data.admin_temporary_password}
              </code>
            </p>
          ) : null}
          <div className="flex justify-end">
            <Button onClick={close}>Done</Button>
          </div>
        </div>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <div>
            <Label htmlFor="tenant-name">Name</Label>
            <Input
              id="tenant-name"
              required
              value={name}
              onChange={(e) => setName(e.target.value)}
            />
          </div>
          <div>
            <Label htmlFor="tenant-admin">First admin's email (optional)</Label>
            <Input
              id="tenant-admin"
              type="email"
              value={adminEmail}
              onChange={(e) => setAdminEmail(e.target.value)}
            />
          </div>
          {create.isError ? <ErrorState error={create.error} /> : null}
          <div className="flex justify-end gap-2">
            <Button variant="secondary" onClick={close}>
              Cancel
            </Button>
            <Button type="submit" disabled={create.isPending}>
              Create
            </Button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
