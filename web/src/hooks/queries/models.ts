import { api, unwrap } from "@/api/client";
import { useQuery } from "@tanstack/react-query";

export const modelKeys = { all: ["models"] as const };

export function useModels(enabled = true) {
  return useQuery({
    queryKey: modelKeys.all,
    queryFn: async () => (await unwrap(api.GET("/v1/models"))).data,
    enabled,
  });
}
