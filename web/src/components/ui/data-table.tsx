import { Button } from "@/components/ui/button";
import { Empty, ErrorState, Loading } from "@/components/ui/states";
import { Table, Td, Th } from "@/components/ui/table";
import type { ReactNode } from "react";

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
  data: { items: T[]; total: number } | undefined;
}

/**
 * A list endpoint as a table, with its loading, error and empty states. Columns whose
 * header is `null` are left out, so role-dependent columns are one condition each.
 */
export function DataTable<T>({
  label,
  query,
  columns,
  rowKey,
  rowTestId,
  empty,
  loading = `Loading ${label.toLowerCase()}`,
}: {
  label: string;
  query: ListQuery<T>;
  columns: (Column<T> | null | false)[];
  rowKey: (row: T) => string | number;
  rowTestId?: (row: T) => string;
  empty: ReactNode;
  loading?: string;
}) {
  if (query.isPending) return <Loading what={loading} />;
  if (query.isError || !query.data) return <ErrorState error={query.error} />;
  if (query.data.items.length === 0) return <Empty>{empty}</Empty>;
  const shown = columns.filter((column): column is Column<T> => !!column);
  return (
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
}

/** Previous/next paging under a table, for `?limit=&offset=` lists. */
export function Pager({
  offset,
  pageSize,
  shown,
  total,
  onChange,
  labels = ["Previous", "Next"],
}: {
  offset: number;
  pageSize: number;
  shown: number;
  total: number;
  onChange: (offset: number) => void;
  labels?: [string, string];
}) {
  if (total === 0) return null;
  return (
    <div className="mt-4 flex items-center justify-between text-sm text-slate-500">
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
    </div>
  );
}
