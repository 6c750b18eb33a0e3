// The signed-in user (from whoami) and what they may do. A 401 anywhere clears the cached user,
// which sends the router to /login.
import { createContext, useContext, useMemo, type ReactNode } from "react";
import { useQuery, type QueryClient } from "@tanstack/react-query";
import { api, call } from "../api/client";
import { ApiError } from "../api/errors";
import { capabilitiesFor, type Capabilities, type User } from "./capabilities";

export const WHOAMI_KEY = ["whoami"] as const;

async function fetchWhoami(): Promise<User | null> {
  try {
    const r = await call(api.GET("/api/v1/auth/whoami"));
    return r?.user ?? null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return null;
    throw e;
  }
}

export function useWhoami() {
  return useQuery({ queryKey: WHOAMI_KEY, queryFn: fetchWhoami, staleTime: 60_000, retry: false });
}

/** Called by the query cache on every failure: a 401 means the session is gone. */
export function handleUnauthorized(qc: QueryClient, e: unknown) {
  if (e instanceof ApiError && e.status === 401) qc.setQueryData(WHOAMI_KEY, null);
}

export interface Session {
  user: User;
  caps: Capabilities;
}

const SessionContext = createContext<Session | null>(null);

export function SessionProvider({ user, children }: { user: User; children: ReactNode }) {
  const value = useMemo(() => ({ user, caps: capabilitiesFor(user) }), [user]);
  return <SessionContext.Provider value={value}>{children}</SessionContext.Provider>;
}

export function useSession(): Session {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in page");
  return s;
}
