import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { Done, FormActions, InputField } from "@/components/ui/form";
import { Empty, ErrorState, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useCreateTenant, useSetTenantStatus, useTenants } from "@/hooks/queries/tenants";
import { formatDateTime } from "@/lib/format";
import { type FormEvent, useState } from "react";

export function AdminTenants() {
  const { data: me } = useMe();
  const [tenantsOffset, setTenantsOffset] = useState(0);
  const tenants = useTenants(tenantsOffset);
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
      <DataTable
        label="Tenants"
        query={tenants}
        paging={{ offset: tenantsOffset, onChange: setTenantsOffset }}
        empty="No tenants yet."
        rowKey={(tenant) => tenant.id}
        rowTestId={(tenant) => `tenant-${tenant.name}`}
        columns={[
          { header: "Name", cell: (tenant) => tenant.name, className: "font-medium" },
          { header: "Plan", cell: (tenant) => tenant.plan },
          {
            header: "Status",
            cell: (tenant) => (
              <Badge tone={tenant.status === "active" ? "green" : "red"}>{tenant.status}</Badge>
            ),
          },
          { header: "Created", cell: (tenant) => formatDateTime(tenant.created_at) },
          {
            header: "",
            className: "text-right",
            cell: (tenant) =>
              tenant.status === "active" ? (
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
              ),
          },
        ]}
      />
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
        <Done onDone={close}>
          <p>Tenant {create.data.tenant.name} was created.</p>
          {create.data.admin_temporary_password ? (
            <p>
              Its admin's temporary password, shown once:{" "}
              <code className="rounded bg-slate-100 px-1">
                {create.data.admin_temporary_password}
              </code>
            </p>
          ) : null}
        </Done>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <InputField
            id="tenant-name"
            label="Name"
            required
            value={name}
            onValue={(value) => setName(value)}
          />
          <InputField
            id="tenant-admin"
            label="First admin's email (optional)"
            type="email"
            value={adminEmail}
            onValue={(value) => setAdminEmail(value)}
          />
          <FormActions
            error={create.error}
            pending={create.isPending}
            submitLabel="Create"
            onCancel={close}
          />
        </form>
      )}
    </Dialog>
  );
}
