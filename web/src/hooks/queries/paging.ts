// Lists come a page at a time in the API's `{items, total, limit, offset}` envelope (the
// server caps `limit` at 200). A table shows one page and pages with `offset`; a picker or a
// name lookup that needs every row reads all pages, so no list stops short without saying.
import { keepPreviousData } from "@tanstack/react-query";

/** Rows per page of a dashboard table. */
export const PAGE_SIZE = 25;

/** The most rows the API answers in one page. */
export const MAX_PAGE = 200;

export interface PageOf<T> {
  items: T[];
  total: number;
  limit: number;
  offset: number;
}

/** Query options for a paged table: the page on screen stays while the next one loads. */
export const pagedOptions = { placeholderData: keepPreviousData } as const;

/** Every row of a list, read page after page until `total` is reached. */
export async function fetchAll<T>(
  fetchPage: (query: { limit: number; offset: number }) => Promise<PageOf<T>>,
): Promise<PageOf<T>> {
  const items: T[] = [];
  let total = 0;
  for (;;) {
    const page = await fetchPage({ limit: MAX_PAGE, offset: items.length });
    items.push(...page.items);
    total = page.total;
    // An empty page ends it too: rows deleted while reading must not loop forever.
    if (page.items.length === 0 || items.length >= total) break;
  }
  return { items, total, limit: items.length, offset: 0 };
}
