import { type Schemas, api, unwrap } from "@/api/client";
import { uploadFile } from "@/lib/upload";
import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";

export const knowledgeKeys = {
  all: ["knowledge-bases"] as const,
  base: (id: string) => ["knowledge-bases", id] as const,
  documents: (id: string) => ["knowledge-bases", id, "documents"] as const,
};

type Document = Schemas["Document"];

/** A document still being ingested: its list is polled until none is. */
export function ingesting(document: Document): boolean {
  return document.status === "queued" || document.status === "processing";
}

export function useKnowledgeBases() {
  return useQuery({
    queryKey: knowledgeKeys.all,
    queryFn: () =>
      unwrap(api.GET("/api/v1/knowledge-bases", { params: { query: { limit: 200 } } })),
  });
}

export function useKnowledgeBase(id: string) {
  return useQuery({
    queryKey: knowledgeKeys.base(id),
    queryFn: () =>
      unwrap(api.GET("/api/v1/knowledge-bases/{kb_id}", { params: { path: { kb_id: id } } })),
  });
}

export function useDocuments(kbId: string) {
  return useQuery({
    queryKey: knowledgeKeys.documents(kbId),
    queryFn: () =>
      unwrap(
        api.GET("/api/v1/knowledge-bases/{kb_id}/documents", {
          params: { path: { kb_id: kbId }, query: { limit: 200 } },
        }),
      ),
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
