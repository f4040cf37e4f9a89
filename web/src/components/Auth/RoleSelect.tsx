import type { Schemas } from "@/api/client";
import { Select } from "@/components/ui/input";
import { ROLE_LABELS } from "@/lib/permissions";
import type { SelectHTMLAttributes } from "react";

type Role = Schemas["Role"];

/** A select of the given roles, by their labels. */
export function RoleSelect({
  roles,
  value,
  onRoleChange,
  ...props
}: {
  roles: Role[];
  value: Role;
  onRoleChange: (role: Role) => void;
} & Omit<SelectHTMLAttributes<HTMLSelectElement>, "value" | "onChange">) {
  return (
    <Select {...props} value={value} onChange={(e) => onRoleChange(e.target.value as Role)}>
      {roles.map((role) => (
        <option key={role} value={role}>
          {ROLE_LABELS[role]}
        </option>
      ))}
    </Select>
  );
}
