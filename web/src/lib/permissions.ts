// Role-based UI: the server lists what the caller may do (`/auth/me` permissions); the UI
// only hides what would be refused anyway, the server still checks every request.
import type { Schemas } from "@/api/client";

export type Permission = Schemas["Permission"];
export type Role = Schemas["Role"];
type Me = Schemas["Me"];

export function can(me: Me | undefined, permission: Permission): boolean {
  return me?.permissions?.includes(permission) ?? false;
}

export const ROLE_LABELS: Record<Role, string> = {
  super_admin: "Super admin",
  tenant_admin: "Tenant admin",
  developer: "Developer",
  billing_admin: "Billing admin",
  viewer: "Viewer",
};

/** The member roles a caller may hand out, as the server's own rule lists them on `/auth/me`. */
export function grantableRoles(me: Me | undefined): Role[] {
  return me?.grantable_roles ?? [];
}
