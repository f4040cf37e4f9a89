import type { Schemas } from "@/api/client";
import { Can } from "@/components/Auth/Can";
import { RoleSelect } from "@/components/Auth/RoleSelect";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { Field, FormActions, InputField } from "@/components/ui/form";
import { ErrorState, PageHeader } from "@/components/ui/states";
import { useApiKeys, useCreateApiKey, useRevokeApiKey } from "@/hooks/queries/apiKeys";
import { useMe } from "@/hooks/queries/auth";
import { formatDateTime } from "@/lib/format";
import { ROLE_LABELS, can, grantableRoles } from "@/lib/permissions";
import { type FormEvent, useState } from "react";

export function ApiKeys() {
  const { data: me } = useMe();
  const [keysOffset, setKeysOffset] = useState(0);
  const keys = useApiKeys(keysOffset);
  const revoke = useRevokeApiKey();
  const [creating, setCreating] = useState(false);
  const mayWrite = can(me, "api_keys:write");

  return (
    <div>
      <PageHeader
        title="API keys"
        actions={
          <Can permission="api_keys:write">
            <Button onClick={() => setCreating(true)}>Create API key</Button>
          </Can>
        }
      />
      <p className="mb-4 text-sm text-slate-500">
        Keys call the OpenAI-compatible gateway at <code>/v1</code> and the API as their role.
        Apiary keeps only a hash: a key is shown once, when it is created.
      </p>
      {revoke.isError ? <ErrorState error={revoke.error} /> : null}
      <DataTable
        label="API keys"
        query={keys}
        paging={{ offset: keysOffset, onChange: setKeysOffset }}
        empty="No API keys yet."
        rowKey={(key) => key.id}
        rowTestId={(key) => `api-key-${key.name}`}
        columns={[
          { header: "Name", cell: (key) => key.name, className: "font-medium" },
          { header: "Key", cell: (key) => <code>{key.prefix}…</code> },
          { header: "Role", cell: (key) => ROLE_LABELS[key.role] },
          { header: "Created", cell: (key) => formatDateTime(key.created_at) },
          { header: "Last used", cell: (key) => formatDateTime(key.last_used_at) },
          {
            header: "Status",
            cell: (key) =>
              key.revoked_at ? (
                <Badge tone="red">revoked</Badge>
              ) : (
                <Badge tone="green">active</Badge>
              ),
          },
          mayWrite && {
            header: "",
            className: "text-right",
            cell: (key) =>
              key.revoked_at ? null : (
                <Button
                  variant="danger"
                  size="sm"
                  disabled={revoke.isPending}
                  onClick={() => {
                    if (window.confirm(`Revoke "${key.name}"? It stops working at once.`)) {
                      revoke.mutate(key.id);
                    }
                  }}
                >
                  Revoke
                </Button>
              ),
          },
        ]}
      />
      <CreateKeyDialog open={creating} onClose={() => setCreating(false)} me={me} />
    </div>
  );
}

function CreateKeyDialog({
  open,
  onClose,
  me,
}: {
  open: boolean;
  onClose: () => void;
  me: Schemas["Me"] | undefined;
}) {
  const create = useCreateApiKey();
  const roles = grantableRoles(me);
  const [name, setName] = useState("");
  const [keyRole, setKeyRole] = useState<Schemas["Role"]>("developer");
  const close = () => {
    create.reset();
    setName("");
    onClose();
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate({
      name: name.trim(),
      role: roles.includes(keyRole) ? keyRole : (roles[0] ?? "viewer"),
    });
  };

  return (
    <Dialog open={open} title={create.data ? "Your new API key" : "Create API key"} onClose={close}>
      {create.data ? (
        <div className="space-y-4">
          <p className="text-sm text-amber-800">
            Copy it now: this is the only time Apiary shows it.
          </p>
          <code
            data-testid="new-api-key"
            className="block break-all rounded-md bg-slate-100 p-3 text-sm"
          >
            {create.data.key}
          </code>
          <div className="flex justify-end gap-2">
            <Button
              variant="secondary"
              onClick={() => navigator.clipboard?.writeText(create.data.key)}
            >
              Copy
            </Button>
            <Button onClick={close}>Done</Button>
          </div>
        </div>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <InputField
            id="key-name"
            label="Name"
            required
            maxLength={200}
            value={name}
            placeholder="e.g. ci"
            onValue={(value) => setName(value)}
          />
          <Field id="key-role" label="Role">
            <RoleSelect id="key-role" roles={roles} value={keyRole} onRoleChange={setKeyRole} />
          </Field>
          <FormActions
            error={create.error}
            pending={create.isPending}
            disabled={!name.trim()}
            submitLabel="Create"
            onCancel={close}
          />
        </form>
      )}
    </Dialog>
  );
}
