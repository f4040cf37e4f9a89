import { DataTable } from "@/components/ui/data-table";
import { knowledgeKeys } from "@/hooks/queries/knowledge";
import { MAX_PAGE, type PageOf, fetchAll } from "@/hooks/queries/paging";
import { KnowledgeBases } from "@/routes/KnowledgeBases";
import { meAs, renderSignedIn } from "@/test/render";
import { cleanup, fireEvent, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";

afterEach(cleanup);

/** The API's page envelope over `rows`, as the server cuts it. */
function pageOf<T>(rows: T[], { limit, offset }: { limit: number; offset: number }): PageOf<T> {
  return { items: rows.slice(offset, offset + limit), total: rows.length, limit, offset };
}

const base = (n: number) => ({
  id: `kb${n}`,
  name: `base-${String(n).padStart(2, "0")}`,
  description: "",
  embedding_model: "minilm",
  chunk_size: 800,
  chunk_overlap: 100,
  created_at: "2026-12-01T10:00:00Z",
});

describe("fetchAll", () => {
  it("reads page after page until every row is in", async () => {
    const rows = Array.from({ length: 2 * MAX_PAGE + 50 }, (_, n) => n);
    const fetchPage = vi.fn(async (query: { limit: number; offset: number }) =>
      pageOf(rows, query),
    );
    const all = await fetchAll(fetchPage);
    expect(all.items).toEqual(rows);
    expect(all.total).toBe(rows.length);
    expect(fetchPage.mock.calls.map(([query]) => query.offset)).toEqual([0, 200, 400]);
  });

  it("stops on an empty page when rows vanish while it reads", async () => {
    const fetchPage = vi.fn(async ({ offset }: { limit: number; offset: number }) =>
      offset === 0
        ? { items: Array.from({ length: MAX_PAGE }, (_, n) => n), total: 300, limit: 200, offset }
        : { items: [], total: 200, limit: 200, offset },
    );
    const all = await fetchAll(fetchPage);
    expect(all.items).toHaveLength(MAX_PAGE);
    expect(fetchPage).toHaveBeenCalledTimes(2);
  });
});

describe("DataTable paging", () => {
  const rows = Array.from({ length: 30 }, (_, n) => base(n + 1));
  const table = (offset: number, onChange: (offset: number) => void, data = rows) => (
    <DataTable
      label="Bases"
      query={{
        isPending: false,
        isError: false,
        error: null,
        data: pageOf(data, { limit: 25, offset }),
      }}
      paging={{ offset, onChange }}
      empty="None."
      rowKey={(row) => row.id}
      columns={[{ header: "Name", cell: (row) => row.name }]}
    />
  );

  it("says where it is in a list longer than a page, and moves by a page", () => {
    const onChange = vi.fn();
    render(table(0, onChange));
    expect(screen.getByTestId("pager-range").textContent).toBe("1–25 of 30");
    expect((screen.getByRole("button", { name: "Previous" }) as HTMLButtonElement).disabled).toBe(
      true,
    );
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(onChange).toHaveBeenCalledWith(25);
  });

  it("shows no pager when the whole list fits", () => {
    render(table(0, vi.fn(), rows.slice(0, 3)));
    expect(screen.queryByTestId("pager-range")).toBeNull();
  });

  it("goes back to the last page when the one on screen is left empty", () => {
    const onChange = vi.fn();
    render(table(50, onChange)); // rows were deleted: offset 50 is past 30 rows
    expect(onChange).toHaveBeenCalledWith(25);
  });
});

describe("a list page", () => {
  it("reaches rows past the first page", async () => {
    const rows = Array.from({ length: 30 }, (_, n) => base(n + 1));
    renderSignedIn(<KnowledgeBases />, meAs("viewer", ["self", "knowledge:read"]), "/knowledge", [
      [knowledgeKeys.page(0), pageOf(rows, { limit: 25, offset: 0 })],
      [knowledgeKeys.page(25), pageOf(rows, { limit: 25, offset: 25 })],
    ]);
    expect(screen.getByTestId("kb-base-25")).toBeTruthy();
    expect(screen.queryByTestId("kb-base-30")).toBeNull();
    fireEvent.click(screen.getByRole("button", { name: "Next" }));
    expect(await screen.findByTestId("kb-base-30")).toBeTruthy();
    expect(screen.getByTestId("pager-range").textContent).toBe("26–30 of 30");
  });
});
