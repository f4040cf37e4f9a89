import { Can } from "@/components/Auth/Can";
import { Search } from "@/components/Knowledge/Search";
import { Upload } from "@/components/Knowledge/Upload";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardTitle } from "@/components/ui/card";
import { DataTable } from "@/components/ui/data-table";
import { ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import {
  useDeleteDocument,
  useDeleteKnowledgeBase,
  useDocuments,
  useKnowledgeBase,
} from "@/hooks/queries/knowledge";
import { formatDateTime } from "@/lib/format";
import { can } from "@/lib/permissions";
import { useState } from "react";
import { useNavigate, useParams } from "react-router-dom";

const STATUS_TONES = {
  queued: "neutral",
  processing: "amber",
  ready: "green",
  failed: "red",
} as const;

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

/** One knowledge base: upload, documents with their ingestion status, and search. */
export function KnowledgeBase() {
  const { kbId = "" } = useParams();
  const { data: me } = useMe();
  const base = useKnowledgeBase(kbId);
  const [documentsOffset, setDocumentsOffset] = useState(0);
  const documents = useDocuments(kbId, documentsOffset);
  const removeDocument = useDeleteDocument(kbId);
  const removeBase = useDeleteKnowledgeBase();
  const navigate = useNavigate();
  const mayWrite = can(me, "knowledge:write");

  if (base.isPending) return <Loading what="Loading the knowledge base" />;
  if (base.isError) return <ErrorState error={base.error} />;

  return (
    <div className="space-y-6">
      <PageHeader
        title={base.data.name}
        actions={
          <Can permission="knowledge:write">
            <Button
              variant="danger"
              disabled={removeBase.isPending}
              onClick={() => {
                if (window.confirm(`Delete ${base.data.name}, its documents and every vector?`)) {
                  removeBase.mutate(kbId, { onSuccess: () => navigate("/knowledge") });
                }
              }}
            >
              Delete
            </Button>
          </Can>
        }
      />
      {base.data.description ? <p className="text-slate-600">{base.data.description}</p> : null}
      {removeBase.isError ? <ErrorState error={removeBase.error} /> : null}
      <section aria-label="Documents" className="space-y-3">
        <div className="flex items-start justify-between">
          <h2 className="text-sm font-semibold uppercase text-slate-500">Documents</h2>
          <Can permission="knowledge:write">
            <Upload kbId={kbId} />
          </Can>
        </div>
        {removeDocument.isError ? <ErrorState error={removeDocument.error} /> : null}
        <DataTable
          label="Documents"
          query={documents}
          paging={{ offset: documentsOffset, onChange: setDocumentsOffset }}
          empty="No documents yet."
          rowKey={(document) => document.id}
          rowTestId={(document) => `document-${document.filename}`}
          columns={[
            { header: "File", cell: (document) => document.filename, className: "font-medium" },
            { header: "Size", cell: (document) => size(document.size_bytes) },
            {
              header: "Status",
              cell: (document) => (
                <div>
                  <Badge tone={STATUS_TONES[document.status]}>{document.status}</Badge>
                  {document.status === "processing" && document.chunk_count > 0 ? (
                    <span className="ml-2 text-xs text-slate-500">
                      {document.chunks_done}/{document.chunk_count} chunks
                    </span>
                  ) : null}
                  {document.error ? (
                    <div className="text-xs text-red-700">{document.error}</div>
                  ) : null}
                </div>
              ),
            },
            { header: "Chunks", cell: (document) => document.chunk_count },
            { header: "Uploaded", cell: (document) => formatDateTime(document.created_at) },
            mayWrite && {
              header: "",
              className: "text-right",
              cell: (document) => (
                <Button
                  variant="ghost"
                  size="sm"
                  disabled={removeDocument.isPending}
                  onClick={() => {
                    if (window.confirm(`Delete ${document.filename} and its vectors?`)) {
                      removeDocument.mutate(document.id);
                    }
                  }}
                >
                  Delete
                </Button>
              ),
            },
          ]}
        />
      </section>
      <Card>
        <CardTitle>Search</CardTitle>
        <Search kbId={kbId} />
      </Card>
    </div>
  );
}
