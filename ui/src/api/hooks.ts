// Query helpers shared by the pages: paged lists with "load more", whole lists for pickers,
// and mutations that refresh what they touched and report the outcome.
import type React from "react";
import {
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
  type QueryKey,
} from "@tanstack/react-query";
import { useFeedback } from "../components/feedback";
import { errorMessage } from "./errors";
import { collectAll, type Page } from "./paging";

export const PAGE_SIZE = 100;

export function usePagedList<T>(
  key: QueryKey,
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  opts: { refetchInterval?: number; enabled?: boolean } = {},
) {
  const q = useInfiniteQuery({
    queryKey: key,
    queryFn: ({ pageParam }) => fetchPage(pageParam),
    initialPageParam: "",
    getNextPageParam: (last) => (last.nextPageToken ? last.nextPageToken : undefined),
    refetchInterval: opts.refetchInterval,
    enabled: opts.enabled,
  });
  const items: T[] = q.data?.pages.flatMap((p) => p.items ?? []) ?? [];
  return { ...q, items };
}

/** A whole list (bounded), for selects and name lookups. */
export function useAll<T>(
  key: QueryKey,
  fetchPage: (pageToken: string) => Promise<Page<T>>,
  opts: { enabled?: boolean; refetchInterval?: number } = {},
) {
  return useQuery({
    queryKey: [...key, "all"],
    queryFn: () => collectAll(fetchPage),
    enabled: opts.enabled,
    refetchInterval: opts.refetchInterval,
  });
}

/**
 * A mutation that invalidates `invalidate` (query key prefixes) on success and toasts the
 * result. Errors are toasted only when `toastErrors` is set; forms show them inline instead.
 */
export function useAction<V, R>(
  fn: (v: V) => Promise<R>,
  opts: { invalidate?: QueryKey[]; success?: string | ((r: R, v: V) => string); toastErrors?: boolean } = {},
) {
  const qc = useQueryClient();
  const { toast } = useFeedback();
  return useMutation({
    mutationFn: fn,
    onSuccess: async (r, v) => {
      if (opts.success) toast(typeof opts.success === "function" ? opts.success(r, v) : opts.success);
      await Promise.all((opts.invalidate ?? []).map((k) => qc.invalidateQueries({ queryKey: k })));
    },
    onError: (e) => {
      if (opts.toastErrors) toast(errorMessage(e), "error");
    },
  });
}

/**
 * Runs a destructive request after the user confirmed it; reports the result as a toast and
 * refreshes `invalidate`. Returns whether it ran and succeeded.
 */
export function useConfirmed() {
  const qc = useQueryClient();
  const { confirm, toast } = useFeedback();
  return async (o: {
    title: string;
    message: React.ReactNode;
    confirmLabel: string;
    run: () => Promise<unknown>;
    invalidate?: QueryKey[];
    success: string;
  }): Promise<boolean> => {
    if (!(await confirm({ title: o.title, message: o.message, confirmLabel: o.confirmLabel, danger: true }))) return false;
    try {
      await o.run();
      toast(o.success);
      await Promise.all((o.invalidate ?? []).map((k) => qc.invalidateQueries({ queryKey: k })));
      return true;
    } catch (e) {
      toast(errorMessage(e), "error");
      return false;
    }
  };
}

/** Refreshes query key prefixes after a form saved. */
export function useInvalidate() {
  const qc = useQueryClient();
  return (...ks: QueryKey[]) => Promise.all(ks.map((k) => qc.invalidateQueries({ queryKey: k })));
}
