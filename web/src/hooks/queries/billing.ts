import { type Schemas, api, toApiError, unwrap } from "@/api/client";
import { PAGE_SIZE, pagedOptions } from "@/hooks/queries/paging";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const billingKeys = {
  plan: ["billing", "plan"] as const,
  settings: ["billing", "settings"] as const,
  payment: ["billing", "payment"] as const,
  invoices: ["billing", "invoices"] as const,
  invoicePage: (offset: number) => ["billing", "invoices", "page", offset] as const,
  invoice: (id: string) => ["billing", "invoices", id] as const,
};

/** The tenant's plan, and its usage against each entitlement this month. */
export function useTenantPlan() {
  return useQuery({
    queryKey: billingKeys.plan,
    queryFn: () => unwrap(api.GET("/api/v1/billing/plan")),
  });
}

export function useBillingSettings() {
  return useQuery({
    queryKey: billingKeys.settings,
    queryFn: () => unwrap(api.GET("/api/v1/billing/settings")),
  });
}

export function useUpdateBillingSettings() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["BillingSettingsUpdate"]) =>
      unwrap(api.PATCH("/api/v1/billing/settings", { body })),
    onSuccess: (settings) => {
      queryClient.setQueryData(billingKeys.settings, settings);
      return queryClient.invalidateQueries({ queryKey: billingKeys.plan });
    },
  });
}

export function usePaymentAccount() {
  return useQuery({
    queryKey: billingKeys.payment,
    queryFn: () => unwrap(api.GET("/api/v1/billing/payment")),
  });
}

export function useInvoices(offset: number) {
  return useQuery({
    queryKey: billingKeys.invoicePage(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/billing/invoices", { params: { query: { limit: PAGE_SIZE, offset } } }),
      ),
    ...pagedOptions,
  });
}

export function useInvoice(invoiceId: string | null) {
  return useQuery({
    queryKey: billingKeys.invoice(invoiceId ?? ""),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/billing/invoices/{invoice_id}", {
          params: { path: { invoice_id: invoiceId ?? "" } },
        }),
      ),
    enabled: invoiceId !== null,
  });
}

export type InvoiceFormat = "pdf" | "csv";

/**
 * An invoice's PDF or CSV. The download needs the session's bearer token, so it is fetched
 * and handed over as a Blob; an error answer becomes an ApiError with the server's detail.
 */
export async function fetchInvoiceFile(invoiceId: string, format: InvoiceFormat): Promise<Blob> {
  const params = { params: { path: { invoice_id: invoiceId } }, parseAs: "stream" as const };
  const { response } =
    format === "pdf"
      ? await api.GET("/api/v1/billing/invoices/{invoice_id}/pdf", params)
      : await api.GET("/api/v1/billing/invoices/{invoice_id}/csv", params);
  if (!response.ok) throw toApiError(response.status, await response.json().catch(() => null));
  return response.blob();
}
