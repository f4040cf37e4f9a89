import { Button } from "@/components/ui/button";
import { Card, CardTitle } from "@/components/ui/card";
import { ErrorState } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useAnswerInvitation, useMyInvitations } from "@/hooks/queries/invitations";
import { formatDateTime } from "@/lib/format";
import { ROLE_LABELS, can } from "@/lib/permissions";

/**
 * The signed-in person's invitations to other tenants. Nothing of theirs reaches a tenant
 * until they accept here; then they sign in to that tenant to work in it.
 */
export function PendingInvitations() {
  const { data: me } = useMe();
  const invitations = useMyInvitations({ enabled: can(me, "invitations:respond") });
  const answer = useAnswerInvitation();
  const joined = answer.data;
  if (!invitations.data?.length && !joined) return null;
  return (
    <section aria-label="Invitations" className="mb-8">
      <Card>
        <CardTitle>Invitations to other tenants</CardTitle>
        {joined ? (
          <output className="mb-3 block text-sm text-slate-700">
            You joined {joined.tenant_name} as {ROLE_LABELS[joined.role]}. Sign out and sign in to{" "}
            {joined.tenant_name} to work there.
          </output>
        ) : null}
        {answer.isError ? <ErrorState error={answer.error} /> : null}
        <ul className="divide-y divide-slate-100">
          {invitations.data?.map((invitation) => (
            <li
              key={invitation.id}
              className="flex items-center justify-between gap-4 py-2 text-sm"
              data-testid={`invitation-${invitation.tenant_name}`}
            >
              <span>
                <strong>{invitation.tenant_name}</strong> invites you as{" "}
                {ROLE_LABELS[invitation.role]}
                {invitation.invited_by_email ? ` (from ${invitation.invited_by_email})` : ""}
                <span className="block text-xs text-slate-500">
                  expires {formatDateTime(invitation.expires_at)}
                </span>
              </span>
              <span className="flex shrink-0 gap-2">
                <Button
                  size="sm"
                  disabled={answer.isPending}
                  onClick={() => answer.mutate({ id: invitation.id, accept: true })}
                >
                  Accept
                </Button>
                <Button
                  size="sm"
                  variant="secondary"
                  disabled={answer.isPending}
                  onClick={() => answer.mutate({ id: invitation.id, accept: false })}
                >
                  Decline
                </Button>
              </span>
            </li>
          ))}
        </ul>
      </Card>
    </section>
  );
}
