// Keyset paging: the server hands out an opaque `nextPageToken` (empty on the last page). Going
// back needs the tokens of the pages already seen, kept as a stack.

export interface Page<T> {
  items?: T[];
  nextPageToken?: string;
}

export interface PagerState {
  /** Page tokens from the first page ("") to the current one. */
  stack: string[];
}

export type PagerAction = { type: "next"; token: string } | { type: "prev" } | { type: "reset" };

export const firstPage = (): PagerState => ({ stack: [""] });

export function pager(state: PagerState, action: PagerAction): PagerState {
  switch (action.type) {
    case "next":
      // An empty token means there is no next page; stay put.
      return action.token === "" ? state : { stack: [...state.stack, action.token] };
    case "prev":
      return state.stack.length > 1 ? { stack: state.stack.slice(0, -1) } : state;
    case "reset":
      return firstPage();
  }
}

export const currentToken = (s: PagerState): string => s.stack[s.stack.length - 1] ?? "";
export const pageNumber = (s: PagerState): number => s.stack.length;
export const hasPrev = (s: PagerState): boolean => s.stack.length > 1;

/**
 * Fetches pages until the last one or until `maxItems`, for pickers that need a whole list
 * (CVLANs in a form). Returns whether it stopped early so the UI can say the list is cut.
 */
export async function collectAll<T>(
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  maxItems = 5000,
): Promise<{ items: T[]; truncated: boolean }> {
  const items: T[] = [];
  let token = "";
  const seen = new Set<string>();
  for (;;) {
    const page = await fetchPage(token);
    items.push(...(page.items ?? []));
    const next = page.nextPageToken ?? "";
    if (next === "") return { items, truncated: false };
    if (items.length >= maxItems || seen.has(next)) return { items, truncated: true };
    seen.add(next);
    token = next;
  }
}
