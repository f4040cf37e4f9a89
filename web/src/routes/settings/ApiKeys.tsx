import type { Schemas } from "@/api/client";
import { Can } from "@/components/Auth/Can";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Dialog } from "@/components/ui/dialog";
import { Input, Label, Select } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useApiKeys, useCreateApiKey, useRevokeApiKey } from "@/hooks/queries/apiKeys";
import { useMe } from "@/hooks/queries/auth";
import { formatDateTime } from "@/lib/format";
import { ROLE_LABELS, can, grantableRoles } from "@/lib/permissions";
import { type FormEvent, useState } from "react";

export function ApiKeys() {
  const { data: me } = useMe();
  const keys = useApiKeys();
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
      {keys.isPending ? (
        <Loading what="Loading API keys" />
      ) : keys.isError ? (
        <ErrorState error={keys.error} />
      ) : keys.data.items.length === 0 ? (
        <Empty>No API keys yet.</Empty>
      ) : (
        <Table aria-label="API keys">
          <thead>
            <tr>
              <Th>Name</Th>
              <Th>Key</Th>
              <Th>Role</Th>
              <Th>Created</Th>
              <Th>Last used</Th>
              <Th>Status</Th>
              {mayWrite ? <Th /> : null}
            </tr>
          </thead>
          <tbody>
            {keys.data.items.map((key) => (
              <tr key={key.id} data-testid={`api-key-${key.name}`}>
                <Td className="font-medium">{key.name}</Td>
                <Td>
                  <code>{key.prefix}…</code>
                </Td>
                <Td>{ROLE_LABELS[key.role]}</Td>
                <Td>{formatDateTime(key.created_at)}</Td>
                <Td>{formatDateTime(key.last_used_at)}</Td>
                <Td>
                  {key.revoked_at ? (
                    <Badge tone="red">revoked</Badge>
                  ) : (
                    <Badge tone="green">active</Badge>
                  )}
                </Td>
                {mayWrite ? (
                  <Td className="text-right">
                    {key.revoked_at ? null : (
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
                    )}
                  </Td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <CreateKeyDialog open={creating} onClose={() => setCreating(false)} role={me?.role} />
    </div>
  );
}

function CreateKeyDialog({
  open,
  onClose,
  role,
}: {
  open: boolean;
  onClose: () => void;
  role: Schemas["Role"] | undefined;
}) {
  const create = useCreateApiKey();
  const roles = grantableRoles(role);
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
          <div>
            <Label htmlFor="key-name">Name</Label>
            <Input
              id="key-name"
              required
              maxLength={200}
              value={name}
              onChange={(e) => setName(e.target.value)}
              placeholder="e.g. ci"
            />
          </div>
          <div>
            <Label htmlFor="key-role">Role</Label>
            <Select
              id="key-role"
              value={keyRole}
              onChange={(e) => setKeyRole(e.target.value as Schemas["Role"])}
            >
              {roles.map((r) => (
                <option key={r} value={r}>
                  {ROLE_LABELS[r]}
                </option>
              ))}
            </Select>
          </div>
          {create.isError ? <ErrorState error={create.error} /> : null}
          <div className="flex justify-end gap-2">
            <Button variant="secondary" onClick={close}>
              Cancel
            </Button>
            <Button type="submit" disabled={create.isPending || !name.trim()}>
              Create
            </Button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
