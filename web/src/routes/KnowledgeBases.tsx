import { Can } from "@/components/Auth/Can";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { FormActions, InputField } from "@/components/ui/form";
import { PageHeader } from "@/components/ui/states";
import { useCreateKnowledgeBase, useKnowledgeBases } from "@/hooks/queries/knowledge";
import { formatDateTime } from "@/lib/format";
import { type FormEvent, useState } from "react";
import { Link, useNavigate } from "react-router-dom";

export function KnowledgeBases() {
  const [basesOffset, setBasesOffset] = useState(0);
  const bases = useKnowledgeBases(basesOffset);
  const [creating, setCreating] = useState(false);

  return (
    <div>
      <PageHeader
        title="Knowledge bases"
        actions={
          <Can permission="knowledge:write">
            <Button onClick={() => setCreating(true)}>Create knowledge base</Button>
          </Can>
        }
      />
      <p className="mb-4 text-sm text-slate-500">
        Upload documents (PDF, Markdown, HTML, DOCX, CSV, JSON, text); agents with the knowledge
        search tool find passages in them and cite them.
      </p>
      <DataTable
        label="Knowledge bases"
        query={bases}
        paging={{ offset: basesOffset, onChange: setBasesOffset }}
        empty="No knowledge bases yet."
        rowKey={(base) => base.id}
        rowTestId={(base) => `kb-${base.name}`}
        columns={[
          {
            header: "Name",
            cell: (base) => (
              <Link to={`/knowledge/${base.id}`} className="font-medium underline">
                {base.name}
              </Link>
            ),
          },
          { header: "Description", cell: (base) => base.description || "—" },
          { header: "Embeddings", cell: (base) => <code>{base.embedding_model}</code> },
          {
            header: "Chunks",
            cell: (base) => `${base.chunk_size} chars, ${base.chunk_overlap} overlap`,
          },
          { header: "Created", cell: (base) => formatDateTime(base.created_at) },
        ]}
      />
      {creating ? <CreateDialog onClose={() => setCreating(false)} /> : null}
    </div>
  );
}

function CreateDialog({ onClose }: { onClose: () => void }) {
  const create = useCreateKnowledgeBase();
  const navigate = useNavigate();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [chunkSize, setChunkSize] = useState("800");
  const [chunkOverlap, setChunkOverlap] = useState("120");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    create.mutate(
      {
        name: name.trim(),
        description,
        chunk_size: Number(chunkSize),
        chunk_overlap: Number(chunkOverlap),
      },
      { onSuccess: (base) => navigate(`/knowledge/${base.id}`) },
    );
  };
  return (
    <Dialog open title="Create knowledge base" onClose={onClose}>
      <form onSubmit={submit} className="space-y-4">
        <InputField
          id="kb-name"
          label="Name"
          required
          maxLength={200}
          value={name}
          onValue={(value) => setName(value)}
        />
        <InputField
          id="kb-description"
          label="Description"
          value={description}
          onValue={(value) => setDescription(value)}
        />
        <div className="grid grid-cols-2 gap-3">
          <InputField
            id="kb-chunk-size"
            label="Chunk size (characters)"
            type="number"
            min={100}
            max={8000}
            required
            value={chunkSize}
            onValue={(value) => setChunkSize(value)}
          />
          <InputField
            id="kb-chunk-overlap"
            label="Overlap (characters)"
            type="number"
            min={0}
            max={2000}
            required
            value={chunkOverlap}
            onValue={(value) => setChunkOverlap(value)}
          />
        </div>
        <FormActions
          error={create.error}
          pending={create.isPending}
          disabled={!name.trim()}
          submitLabel="Create"
          onCancel={onClose}
        />
      </form>
    </Dialog>
  );
}
