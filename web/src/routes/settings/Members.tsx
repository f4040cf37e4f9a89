import type { Schemas } from "@/api/client";
import { Can } from "@/components/Auth/Can";
import { Button } from "@/components/ui/button";
import { Dialog } from "@/components/ui/dialog";
import { Input, Label, Select } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { useMe } from "@/hooks/queries/auth";
import { useAddMember, useChangeRole, useMembers, useRemoveMember } from "@/hooks/queries/members";
import { formatDateTime } from "@/lib/format";
import { ROLE_LABELS, can, grantableRoles } from "@/lib/permissions";
import { type FormEvent, useState } from "react";

export function Members() {
  const { data: me } = useMe();
  const members = useMembers();
  const changeRole = useChangeRole();
  const remove = useRemoveMember();
  const [adding, setAdding] = useState(false);
  const mayWrite = can(me, "members:write");
  const roles = grantableRoles(me?.role);

  return (
    <div>
      <PageHeader
        title="Members"
        actions={
          <Can permission="members:write">
            <Button onClick={() => setAdding(true)}>Add member</Button>
          </Can>
        }
      />
      {changeRole.isError ? <ErrorState error={changeRole.error} /> : null}
      {remove.isError ? <ErrorState error={remove.error} /> : null}
      {members.isPending ? (
        <Loading what="Loading members" />
      ) : members.isError ? (
        <ErrorState error={members.error} />
      ) : members.data.items.length === 0 ? (
        <Empty>No members yet.</Empty>
      ) : (
        <Table aria-label="Members">
          <thead>
            <tr>
              <Th>Email</Th>
              <Th>Name</Th>
              <Th>Role</Th>
              <Th>Since</Th>
              {mayWrite ? <Th /> : null}
            </tr>
          </thead>
          <tbody>
            {members.data.items.map((member) => (
              <tr key={member.id}>
                <Td className="font-medium">{member.email}</Td>
                <Td>{member.name || "—"}</Td>
                <Td>
                  {mayWrite && member.user_id !== me?.user_id ? (
                    <Select
                      aria-label={`Role of ${member.email}`}
                      className="h-8 w-40"
                      value={member.role}
                      disabled={changeRole.isPending}
                      onChange={(e) =>
                        changeRole.mutate({
                          id: member.id,
                          role: e.target.value as Schemas["Role"],
                        })
                      }
                    >
                      {roles.map((r) => (
                        <option key={r} value={r}>
                          {ROLE_LABELS[r]}
                        </option>
                      ))}
                    </Select>
                  ) : (
                    ROLE_LABELS[member.role]
                  )}
                </Td>
                <Td>{formatDateTime(member.created_at)}</Td>
                {mayWrite ? (
                  <Td className="text-right">
                    {member.user_id === me?.user_id ? null : (
                      <Button
                        variant="ghost"
                        size="sm"
                        onClick={() => {
                          if (window.confirm(`Remove ${member.email} from this tenant?`)) {
                            remove.mutate(member.id);
                          }
                        }}
                      >
                        Remove
                      </Button>
                    )}
                  </Td>
                ) : null}
              </tr>
            ))}
          </tbody>
        </Table>
      )}
      <AddMemberDialog open={adding} onClose={() => setAdding(false)} roles={roles} />
    </div>
  );
}

function AddMemberDialog({
  open,
  onClose,
  roles,
}: {
  open: boolean;
  onClose: () => void;
  roles: Schemas["Role"][];
}) {
  const add = useAddMember();
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<Schemas["Role"]>("viewer");
  const close = () => {
    add.reset();
    setEmail("");
    onClose();
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    add.mutate({ email: email.trim(), role });
  };
  return (
    <Dialog open={open} title="Add member" onClose={close}>
      {add.data ? (
        <div className="space-y-4">
          <p className="text-sm">
            {add.data.email} was added as {ROLE_LABELS[add.data.role]}.
          </p>
          {add.data.temporary_password ? (
            <p className="text-sm">
              Their temporary password, shown once:{" "}
              <code className="rounded bg-slate-100 px-1">{add.data.temporary_password}</code>
            </p>
          ) : null}
          <div className="flex justify-end">
            <Button onClick={close}>Done</Button>
          </div>
        </div>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <div>
            <Label htmlFor="member-email">Email</Label>
            <Input
              id="member-email"
              type="email"
              required
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          </div>
          <div>
            <Label htmlFor="member-role">Role</Label>
            <Select
              id="member-role"
              value={role}
              onChange={(e) => setRole(e.target.value as Schemas["Role"])}
            >
              {roles.map((r) => (
                <option key={r} value={r}>
                  {ROLE_LABELS[r]}
                </option>
              ))}
            </Select>
          </div>
          {add.isError ? <ErrorState error={add.error} /> : null}
          <div className="flex justify-end gap-2">
            <Button variant="secondary" onClick={close}>
              Cancel
            </Button>
            <Button type="submit" disabled={add.isPending}>
              Add
            </Button>
          </div>
        </form>
      )}
    </Dialog>
  );
}
