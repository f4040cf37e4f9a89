import { api, unwrap } from "@/api/client";
import { useQuery } from "@tanstack/react-query";

export const modelKeys = { all: ["models"] as const };

export interface GatewayModel {
  id: string;
  owned_by: string;
}

// /v1/models answers OpenAI's list shape, which its OpenAPI entry leaves untyped.
export function useModels(enabled = true) {
  return useQuery({
    queryKey: modelKeys.all,
    queryFn: async () => {
      const body = (await unwrap(api.GET("/v1/models"))) as unknown as { data: GatewayModel[] };
      return body.data;
    },
    enabled,
  });
}
