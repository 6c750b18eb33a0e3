// The tenant on screen. Tenant users are pinned to their own tenant: a URL naming another one is
// redirected before any request for it is made.
import { createContext, useContext, type ReactNode } from "react";
import { Navigate, Outlet, useLocation, useParams } from "react-router";
import { useQuery } from "@tanstack/react-query";
import { keys, tenants, type Tenant } from "./api/entities";
import { useSession } from "./auth/session";
import { ErrorBox, Loading } from "./components/bits";

export interface TenantInfo {
  id: string;
  name: string;
  tenant: Tenant;
}

const TenantContext = createContext<TenantInfo | null>(null);

export function useTenant(): TenantInfo {
  const t = useContext(TenantContext);
  if (!t) throw new Error("useTenant outside a tenant page");
  return t;
}

export function useOptionalTenant(): TenantInfo | null {
  return useContext(TenantContext);
}

/** The part of a tenant path after /t/<id>/, to keep the same page when switching tenants. */
export function tenantSubpath(pathname: string): string {
  const m = /^\/t\/[^/]+\/([^/]+)/.exec(pathname);
  return m?.[1] ?? "cvlans";
}

export function TenantScope() {
  const { tenantId = "" } = useParams();
  const { user, caps } = useSession();
  const loc = useLocation();
  const own = user.tenantId ?? "";
  const allowed = caps.isSuperadmin || tenantId === own;
  const q = useQuery({
    queryKey: [...keys.tenants, tenantId],
    queryFn: () => tenants.get(tenantId),
    enabled: allowed && tenantId !== "",
  });
  if (!allowed) {
    return <Navigate to={own ? `/t/${own}/${tenantSubpath(loc.pathname)}` : "/"} replace />;
  }
  if (q.isLoading) return <Loading what="tenant" />;
  if (q.error || !q.data) return <ErrorBox error={q.error ?? new Error("Tenant not found.")} />;
  const t = q.data;
  return (
    <TenantProvider value={{ id: t.id ?? tenantId, name: t.name ?? tenantId, tenant: t }}>
      <Outlet />
    </TenantProvider>
  );
}

function TenantProvider({ value, children }: { value: TenantInfo; children: ReactNode }) {
  return <TenantContext.Provider value={value}>{children}</TenantContext.Provider>;
}
