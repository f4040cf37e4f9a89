import type { Schemas } from "@/api/client";
import { Can } from "@/components/Auth/Can";
import { RoleSelect } from "@/components/Auth/RoleSelect";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { Done, Field, FormActions, InputField } from "@/components/ui/form";
import { ErrorState, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useCancelInvitation, useInvite, useSentInvitations } from "@/hooks/queries/invitations";
import { useAddMember, useChangeRole, useMembers, useRemoveMember } from "@/hooks/queries/members";
import { formatDateTime } from "@/lib/format";
import { ROLE_LABELS, can, grantableRoles } from "@/lib/permissions";
import { type FormEvent, useState } from "react";

export function Members() {
  const { data: me } = useMe();
  const [membersOffset, setMembersOffset] = useState(0);
  const members = useMembers(membersOffset);
  const changeRole = useChangeRole();
  const remove = useRemoveMember();
  const [adding, setAdding] = useState(false);
  const [inviting, setInviting] = useState(false);
  const mayWrite = can(me, "members:write");
  const roles = grantableRoles(me);

  return (
    <div>
      <PageHeader
        title="Members"
        actions={
          <Can permission="members:write">
            <div className="flex gap-2">
              <Button variant="secondary" onClick={() => setInviting(true)}>
                Invite existing account
              </Button>
              <Button onClick={() => setAdding(true)}>Add member</Button>
            </div>
          </Can>
        }
      />
      {changeRole.isError ? <ErrorState error={changeRole.error} /> : null}
      {remove.isError ? <ErrorState error={remove.error} /> : null}
      <DataTable
        label="Members"
        query={members}
        paging={{ offset: membersOffset, onChange: setMembersOffset }}
        empty="No members yet."
        rowKey={(member) => member.id}
        columns={[
          { header: "Email", cell: (member) => member.email, className: "font-medium" },
          { header: "Name", cell: (member) => member.name || "—" },
          {
            header: "Role",
            cell: (member) =>
              mayWrite && member.user_id !== me?.user_id ? (
                <RoleSelect
                  aria-label={`Role of ${member.email}`}
                  className="h-8 w-40"
                  roles={roles}
                  value={member.role}
                  disabled={changeRole.isPending}
                  onRoleChange={(role) => changeRole.mutate({ id: member.id, role })}
                />
              ) : (
                ROLE_LABELS[member.role]
              ),
          },
          { header: "Since", cell: (member) => formatDateTime(member.created_at) },
          mayWrite && {
            header: "",
            className: "text-right",
            cell: (member) =>
              member.user_id === me?.user_id ? null : (
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
              ),
          },
        ]}
      />
      <SentInvitations mayWrite={mayWrite} />
      <AddMemberDialog open={adding} onClose={() => setAdding(false)} roles={roles} />
      <InviteDialog open={inviting} onClose={() => setInviting(false)} roles={roles} />
    </div>
  );
}

/** Invitations this tenant sent that their accounts have not answered yet. */
function SentInvitations({ mayWrite }: { mayWrite: boolean }) {
  const [invitationsOffset, setInvitationsOffset] = useState(0);
  const invitations = useSentInvitations(invitationsOffset);
  const cancel = useCancelInvitation();
  if (!invitations.data?.total) return null;
  return (
    <section aria-label="Pending invitations" className="mt-8">
      <h2 className="mb-3 text-sm font-semibold uppercase text-slate-500">Pending invitations</h2>
      {cancel.isError ? <ErrorState error={cancel.error} /> : null}
      <DataTable
        label="Pending invitations"
        query={invitations}
        paging={{ offset: invitationsOffset, onChange: setInvitationsOffset }}
        empty="No pending invitations."
        rowKey={(invitation) => invitation.id}
        columns={[
          { header: "Email", cell: (invitation) => invitation.email, className: "font-medium" },
          { header: "Role", cell: (invitation) => ROLE_LABELS[invitation.role] },
          { header: "Expires", cell: (invitation) => formatDateTime(invitation.expires_at) },
          mayWrite && {
            header: "",
            className: "text-right",
            cell: (invitation) => (
              <Button
                variant="ghost"
                size="sm"
                disabled={cancel.isPending}
                onClick={() => cancel.mutate(invitation.id)}
              >
                Cancel
              </Button>
            ),
          },
        ]}
      />
    </section>
  );
}

/** An account that already exists joins only when it accepts, signed in as itself. */
function InviteDialog({
  open,
  onClose,
  roles,
}: {
  open: boolean;
  onClose: () => void;
  roles: Schemas["Role"][];
}) {
  const invite = useInvite();
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<Schemas["Role"]>("viewer");
  const close = () => {
    invite.reset();
    setEmail("");
    onClose();
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    invite.mutate({ email: email.trim(), role });
  };
  return (
    <Dialog open={open} title="Invite an existing account" onClose={close}>
      {invite.data ? (
        <Done onDone={close}>
          <p>
            {invite.data.email} is invited as {ROLE_LABELS[invite.data.role]}. They join when they
            accept, from their own sign-in.
          </p>
        </Done>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <InputField
            id="invite-email"
            label="Email"
            type="email"
            required
            value={email}
            onValue={(value) => setEmail(value)}
          />
          <Field id="invite-role" label="Role">
            <RoleSelect id="invite-role" roles={roles} value={role} onRoleChange={setRole} />
          </Field>
          <FormActions
            error={invite.error}
            pending={invite.isPending}
            submitLabel="Invite"
            onCancel={close}
          />
        </form>
      )}
    </Dialog>
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
        <Done onDone={close}>
          <p>
            {add.data.email} was added as {ROLE_LABELS[add.data.role]}.
          </p>
          {add.data.temporary_password ? (
            <p>
              Their temporary password, shown once:{" "}
              <code className="rounded bg-slate-100 px-1">{add.data.temporary_password}</code>
            </p>
          ) : null}
        </Done>
      ) : (
        <form onSubmit={submit} className="space-y-4">
          <InputField
            id="member-email"
            label="Email"
            type="email"
            required
            value={email}
            onValue={(value) => setEmail(value)}
          />
          <Field id="member-role" label="Role">
            <RoleSelect id="member-role" roles={roles} value={role} onRoleChange={setRole} />
          </Field>
          <FormActions
            error={add.error}
            pending={add.isPending}
            submitLabel="Add"
            onCancel={close}
          />
        </form>
      )}
    </Dialog>
  );
}
