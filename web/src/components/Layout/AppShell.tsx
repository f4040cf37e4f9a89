import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { ErrorState, Loading } from "@/components/ui/states";
import { useMe, useSignOut } from "@/hooks/queries/auth";
import { cn } from "@/lib/cn";
import { type Permission, ROLE_LABELS, can } from "@/lib/permissions";
import { NavLink, Outlet } from "react-router-dom";

interface NavItem {
  to: string;
  label: string;
  permission?: Permission;
  superAdmin?: boolean;
  /** Needs a tenant: hidden from a super admin signed in to the platform, not a tenant. */
  tenant?: boolean;
}

const SECTIONS: { title: string; items: NavItem[] }[] = [
  {
    title: "Platform",
    items: [
      { to: "/", label: "Overview" },
      { to: "/analytics", label: "Cost analytics", permission: "usage:read", tenant: true },
      { to: "/agents", label: "Agents", permission: "agents:read", tenant: true },
      { to: "/run", label: "Run", permission: "executions:run", tenant: true },
      { to: "/executions", label: "Executions", permission: "executions:read", tenant: true },
      { to: "/knowledge", label: "Knowledge bases", permission: "knowledge:read", tenant: true },
    ],
  },
  {
    title: "Settings",
    items: [
      { to: "/settings/api-keys", label: "API keys", permission: "api_keys:read", tenant: true },
      { to: "/settings/members", label: "Members", permission: "members:read", tenant: true },
      { to: "/settings/limits", label: "Budgets & limits", permission: "usage:read", tenant: true },
      { to: "/settings/routing", label: "Routing & providers" },
      { to: "/settings/audit", label: "Audit log", permission: "audit:read", tenant: true },
      { to: "/billing", label: "Billing", permission: "billing:read", tenant: true },
    ],
  },
  {
    title: "Admin",
    items: [
      { to: "/admin/tenants", label: "Tenants", superAdmin: true },
      { to: "/admin/plans", label: "Plans", superAdmin: true },
      { to: "/admin/revenue", label: "Revenue & margin", superAdmin: true },
    ],
  },
];

export function AppShell() {
  const me = useMe();
  const signOut = useSignOut();
  if (me.isPending) return <Loading what="Signing in" />;
  if (me.isError) return <ErrorState error={me.error} />;
  const user = me.data;
  const tenant = user.memberships.find((m) => m.tenant_id === user.tenant_id);
  return (
    <div className="flex min-h-screen">
      <aside className="flex w-60 shrink-0 flex-col border-r border-slate-200 bg-white">
        <div className="flex items-center gap-2 px-5 py-4 text-lg font-bold">
          <span className="inline-block h-5 w-5 rounded bg-amber-400" aria-hidden="true" />
          Apiary
        </div>
        <nav className="flex-1 space-y-5 px-3" aria-label="Main">
          {SECTIONS.map((section) => {
            const items = section.items.filter(
              (item) =>
                (!item.permission || can(user, item.permission)) &&
                (!item.superAdmin || user.is_super_admin) &&
                (!item.tenant || user.tenant_id !== null),
            );
            if (items.length === 0) return null;
            return (
              <div key={section.title}>
                <div className="px-2 pb-1 text-xs font-semibold uppercase text-slate-400">
                  {section.title}
                </div>
                {items.map((item) => (
                  <NavLink
                    key={item.to}
                    to={item.to}
                    end={item.to === "/"}
                    className={({ isActive }) =>
                      cn(
                        "flex items-center justify-between rounded-md px-2 py-1.5 text-sm",
                        isActive ? "bg-slate-900 text-white" : "text-slate-700 hover:bg-slate-100",
                      )
                    }
                  >
                    {item.label}
                  </NavLink>
                ))}
              </div>
            );
          })}
        </nav>
        <div className="border-t border-slate-200 p-4 text-sm">
          <div className="truncate font-medium" data-testid="signed-in-as">
            {user.email ?? "API key"}
          </div>
          <div className="mt-1 flex items-center gap-2 text-slate-500">
            <span className="truncate">{tenant?.tenant_name ?? "platform"}</span>
            <Badge>{ROLE_LABELS[user.role]}</Badge>
          </div>
          <Button
            variant="secondary"
            size="sm"
            className="mt-3 w-full"
            onClick={() => signOut.mutate()}
            disabled={signOut.isPending}
          >
            Sign out
          </Button>
        </div>
      </aside>
      <main className="flex-1 overflow-x-hidden p-8">
        <Outlet />
      </main>
    </div>
  );
}
