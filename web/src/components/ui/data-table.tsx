import { Button } from "@/components/ui/button";
import { Empty, ErrorState, Loading } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import { type ReactNode, useEffect } from "react";

export interface Column<T> {
  header: ReactNode;
  cell: (row: T) => ReactNode;
  className?: string;
}

/** What a list query gives a table: TanStack Query's result for a `{items, total}` page. */
interface ListQuery<T> {
  isPending: boolean;
  isError: boolean;
  error: unknown;
  data: { items: T[]; total: number; limit?: number } | undefined;
}

/** Where a paged table is: its offset, and how to move it. */
export interface Paging {
  offset: number;
  onChange: (offset: number) => void;
}

/**
 * A list endpoint as a table, with its loading, error and empty states. Columns whose
 * header is `null` are left out, so role-dependent columns are one condition each. With
 * `paging`, a list longer than a page gets previous/next under it.
 */
export function DataTable<T>({
  label,
  query,
  columns,
  rowKey,
  rowTestId,
  empty,
  loading = `Loading ${label.toLowerCase()}`,
  paging,
}: {
  label: string;
  query: ListQuery<T>;
  columns: (Column<T> | null | false)[];
  rowKey: (row: T) => string | number;
  rowTestId?: (row: T) => string;
  empty: ReactNode;
  loading?: string;
  paging?: Paging;
}) {
  const total = query.data?.total ?? 0;
  const pageSize = query.data?.limit || query.data?.items.length || 1;
  // A page left empty (its last rows deleted, or the list shrank): go to the last one.
  const stranded = !!paging && paging.offset > 0 && query.data?.items.length === 0;
  const lastPage = Math.max(0, Math.floor((total - 1) / pageSize) * pageSize);
  const moveTo = paging?.onChange;
  useEffect(() => {
    if (stranded && moveTo) moveTo(lastPage);
  }, [stranded, lastPage, moveTo]);

  if (query.isPending) return <Loading what={loading} />;
  if (query.isError || !query.data) return <ErrorState error={query.error} />;
  if (query.data.items.length === 0) {
    return stranded ? <Loading what={loading} /> : <Empty>{empty}</Empty>;
  }
  const shown = columns.filter((column): column is Column<T> => !!column);
  const table = (
    <Table aria-label={label}>
      <thead>
        <tr>
          {shown.map((column, index) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: columns are fixed per render
            <Th key={index}>{column.header}</Th>
          ))}
        </tr>
      </thead>
      <tbody>
        {query.data.items.map((row) => (
          <tr key={rowKey(row)} data-testid={rowTestId?.(row)}>
            {shown.map((column, index) => (
              // biome-ignore lint/suspicious/noArrayIndexKey: columns are fixed per render
              <Td key={index} className={column.className}>
                {column.cell(row)}
              </Td>
            ))}
          </tr>
        ))}
      </tbody>
    </Table>
  );
  if (!paging || (paging.offset === 0 && total <= query.data.items.length)) return table;
  return (
    <div>
      {table}
      <Pager
        offset={paging.offset}
        pageSize={pageSize}
        shown={query.data.items.length}
        total={total}
        onChange={paging.onChange}
        label={label}
      />
    </div>
  );
}

/** Previous/next paging under a table, for `?limit=&offset=` lists. */
export function Pager({
  offset,
  pageSize,
  shown,
  total,
  onChange,
  labels = ["Previous", "Next"],
  label,
}: {
  offset: number;
  pageSize: number;
  shown: number;
  total: number;
  onChange: (offset: number) => void;
  labels?: [string, string];
  /** What is paged, when a page holds more than one list. */
  label?: string;
}) {
  if (total === 0) return null;
  return (
    <nav
      aria-label={label ? `${label} pages` : "Pages"}
      className="mt-4 flex items-center justify-between text-sm text-slate-500"
    >
      <span data-testid="pager-range">
        {offset + 1}–{offset + shown} of {total}
      </span>
      <div className="flex gap-2">
        <Button
          variant="secondary"
          size="sm"
          disabled={offset === 0}
          onClick={() => onChange(Math.max(0, offset - pageSize))}
        >
          {labels[0]}
        </Button>
        <Button
          variant="secondary"
          size="sm"
          disabled={offset + pageSize >= total}
          onClick={() => onChange(offset + pageSize)}
        >
          {labels[1]}
        </Button>
      </div>
    </nav>
  );
}
