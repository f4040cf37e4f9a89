import type { Schemas } from "@/api/client";
import { authKeys } from "@/hooks/queries/auth";
import { useAuthStore } from "@/stores/auth";
// Render a component as a signed-in caller with the given role and permissions.
import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactNode } from "react";
import { MemoryRouter } from "react-router-dom";

export function meAs(role: Schemas["Role"], permissions: Schemas["Permission"][]): Schemas["Me"] {
  return {
    user_id: "00000000-0000-0000-0000-000000000001",
    api_key_id: null,
    email: `${role}@acme.example`,
    name: null,
    tenant_id: "00000000-0000-0000-0000-0000000000aa",
    role,
    is_super_admin: role === "super_admin",
    memberships: [{ tenant_id: "00000000-0000-0000-0000-0000000000aa", tenant_name: "acme", role }],
    permissions,
  };
}

/** `seed`: query results to start with, e.g. [[agentKeys.all, page]], so no request is made. */
export function renderSignedIn(
  ui: ReactNode,
  me: Schemas["Me"],
  path = "/",
  seed: [readonly unknown[], unknown][] = [],
) {
  useAuthStore.getState().setSession({ access_token: "a", expires_in: 900 });
  const queryClient = new QueryClient({
    defaultOptions: { queries: { retry: false, staleTime: Number.POSITIVE_INFINITY } },
  });
  queryClient.setQueryData(authKeys.me, me);
  for (const [key, data] of seed) queryClient.setQueryData(key, data);
  return render(
    <QueryClientProvider client={queryClient}>
      <MemoryRouter
        initialEntries={[path]}
        future={{ v7_startTransition: true, v7_relativeSplatPath: true }}
      >
        {ui}
      </MemoryRouter>
    </QueryClientProvider>,
  );
}
