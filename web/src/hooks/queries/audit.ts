import { api, unwrap } from "@/api/client";
import { useQuery } from "@tanstack/react-query";

export const auditKeys = { page: (offset: number) => ["audit-log", offset] as const };

export const AUDIT_PAGE_SIZE = 50;

export function useAuditLog(offset: number) {
  return useQuery({
    queryKey: auditKeys.page(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/audit-log", { params: { query: { limit: AUDIT_PAGE_SIZE, offset } } }),
      ),
  });
}
