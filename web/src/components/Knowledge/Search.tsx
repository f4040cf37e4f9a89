import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input, Select } from "@/components/ui/input";
import { Empty, ErrorState } from "@/components/ui/states";
import { useSearch } from "@/hooks/queries/knowledge";
import { type FormEvent, useState } from "react";

/** A search box over one knowledge base: the passages found, each with its citation. */
export function Search({ kbId }: { kbId: string }) {
  const search = useSearch(kbId);
  const [query, setQuery] = useState("");
  const [mode, setMode] = useState<"hybrid" | "dense">("hybrid");
  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (query.trim()) search.mutate({ query: query.trim(), mode, top_k: 5 });
  };
  return (
    <div className="space-y-3">
      <form onSubmit={submit} className="flex gap-2" aria-label="Search">
        <Input
          type="search"
          aria-label="Search query"
          placeholder="Ask something the documents answer"
          value={query}
          onChange={(e) => setQuery(e.target.value)}
        />
        <Select
          aria-label="Search mode"
          className="w-36"
          value={mode}
          onChange={(e) => setMode(e.target.value as "hybrid" | "dense")}
        >
          <option value="hybrid">Hybrid</option>
          <option value="dense">Dense only</option>
        </Select>
        <Button type="submit" disabled={search.isPending || !query.trim()}>
          Search
        </Button>
      </form>
      {search.isError ? <ErrorState error={search.error} /> : null}
      {search.data ? (
        search.data.results.length === 0 ? (
          <Empty>Nothing found for “{search.data.query}”.</Empty>
        ) : (
          <ol className="space-y-3" aria-label="Search results">
            {search.data.results.map((hit, index) => (
              <li key={hit.chunk_id}>
                <Card className="p-4">
                  <div className="mb-2 flex items-center justify-between text-xs text-slate-500">
                    <span data-testid="citation">
                      [{index + 1}] {hit.citation.filename}
                      {hit.citation.page ? `, page ${hit.citation.page}` : ""}
                      {hit.citation.section ? ` — ${hit.citation.section}` : ""} (chars{" "}
                      {hit.citation.char_start}–{hit.citation.char_end})
                    </span>
                    <span>score {hit.score.toFixed(3)}</span>
                  </div>
                  <p className="whitespace-pre-wrap text-sm">{hit.text}</p>
                </Card>
              </li>
            ))}
          </ol>
        )
      ) : null}
    </div>
  );
}
