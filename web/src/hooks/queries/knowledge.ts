import { type Schemas, api, unwrap } from "@/api/client";
import { PAGE_SIZE, fetchAll, pagedOptions } from "@/hooks/queries/paging";
import { uploadFile } from "@/lib/upload";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const knowledgeKeys = {
  all: ["knowledge-bases"] as const,
  page: (offset: number) => ["knowledge-bases", "page", offset] as const,
  every: ["knowledge-bases", "every"] as const,
  base: (id: string) => ["knowledge-bases", id] as const,
  documents: (id: string) => ["knowledge-bases", id, "documents"] as const,
  documentPage: (id: string, offset: number) =>
    ["knowledge-bases", id, "documents", offset] as const,
};

type Document = Schemas["Document"];

/** A document still being ingested: its list is polled until none is. */
export function ingesting(document: Document): boolean {
  return document.status === "queued" || document.status === "processing";
}

/** One page of the tenant's knowledge bases, for their table. */
export function useKnowledgeBases(offset: number) {
  return useQuery({
    queryKey: knowledgeKeys.page(offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/knowledge-bases", { params: { query: { limit: PAGE_SIZE, offset } } }),
      ),
    ...pagedOptions,
  });
}

/** Every knowledge base, for pickers and for naming a base by id. */
export function useAllKnowledgeBases() {
  return useQuery({
    queryKey: knowledgeKeys.every,
    queryFn: () =>
      fetchAll((query) => unwrap(api.GET("/api/v1/knowledge-bases", { params: { query } }))),
  });
}

export function useKnowledgeBase(id: string) {
  return useQuery({
    queryKey: knowledgeKeys.base(id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/knowledge-bases/{kb_id}", { params: { path: { kb_id: id } } })),
  });
}

export function useDocuments(kbId: string, offset: number) {
  return useQuery({
    queryKey: knowledgeKeys.documentPage(kbId, offset),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/knowledge-bases/{kb_id}/documents", {
          params: { path: { kb_id: kbId }, query: { limit: PAGE_SIZE, offset } },
        }),
      ),
    ...pagedOptions,
    refetchInterval: (query) => (query.state.data?.items.some(ingesting) ? 1000 : false),
  });
}

export function useCreateKnowledgeBase() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (body: Schemas["KnowledgeBaseCreate"]) =>
      unwrap(api.POST("/api/v1/knowledge-bases", { body })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: knowledgeKeys.all }),
  });
}

export function useDeleteKnowledgeBase() {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (id: string) =>
      unwrap(api.DELETE("/api/v1/knowledge-bases/{kb_id}", { params: { path: { kb_id: id } } })),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: knowledgeKeys.all }),
  });
}

export function useUploadDocument(kbId: string, onProgress: (fraction: number) => void) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (file: File) =>
      uploadFile<Document>(`/api/v1/knowledge-bases/${kbId}/documents`, file, onProgress),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: knowledgeKeys.documents(kbId) }),
  });
}

export function useDeleteDocument(kbId: string) {
  const queryClient = useQueryClient();
  return useMutation({
    mutationFn: (documentId: string) =>
      unwrap(
        api.DELETE("/api/v1/knowledge-bases/{kb_id}/documents/{document_id}", {
          params: { path: { kb_id: kbId, document_id: documentId } },
        }),
      ),
    onSuccess: () => queryClient.invalidateQueries({ queryKey: knowledgeKeys.documents(kbId) }),
  });
}

export function useSearch(kbId: string) {
  return useMutation({
    mutationFn: (body: Schemas["SearchRequest"]) =>
      unwrap(
        api.POST("/api/v1/knowledge-bases/{kb_id}/search", {
          params: { path: { kb_id: kbId } },
          body,
        }),
      ),
  });
}
