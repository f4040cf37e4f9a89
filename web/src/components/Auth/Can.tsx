import { useMe } from "@/hooks/queries/auth";
import { type Permission, can } from "@/lib/permissions";
import type { ReactNode } from "react";

/** Renders its children only when the signed-in caller holds `permission`. */
export function Can({ permission, children }: { permission: Permission; children: ReactNode }) {
  const { data: me } = useMe();
  return can(me, permission) ? <>{children}</> : null;
}
