import { useState } from "react";
import { BrowserRouter, Navigate, Outlet, Route, Routes, useLocation } from "react-router";
import { MutationCache, QueryCache, QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { isStatus } from "./api/errors";
import { handleUnauthorized, SessionProvider, useSession, useWhoami } from "./auth/session";
import { ErrorBox, Loading } from "./components/bits";
import { FeedbackProvider } from "./components/feedback";
import { Layout } from "./Layout";
import { TenantScope } from "./tenant";
import { LoginPage } from "./pages/Login";
import { TenantsPage } from "./pages/Tenants";
import { CvlansPage } from "./pages/Cvlans";
import { NodesPage } from "./pages/Nodes";
import { UsersPage } from "./pages/Users";
import { GroupsPage } from "./pages/Groups";
import { PoliciesPage } from "./pages/Policies";
import { PolicyEditorPage } from "./pages/PolicyEditor";
import { TokensPage } from "./pages/Tokens";
import { ExternalPeersPage } from "./pages/ExternalPeers";
import { AddressesPage } from "./pages/Addresses";
import { AuditPage } from "./pages/Audit";
import { SsoPage } from "./pages/Sso";
import { VroutersPage } from "./pages/Vrouters";
import { RegionsPage, RelaysPage } from "./pages/Infrastructure";
import { ApiKeysPage } from "./pages/ApiKeys";

export function makeQueryClient(): QueryClient {
  const qc: QueryClient = new QueryClient({
    queryCache: new QueryCache({ onError: (e) => handleUnauthorized(qc, e) }),
    mutationCache: new MutationCache({ onError: (e) => handleUnauthorized(qc, e) }),
    defaultOptions: {
      queries: {
        // 4xx answers do not get better by asking again.
        retry: (n, e) => !isStatus(e, 400, 401, 403, 404, 405, 409) && n < 2,
        refetchOnWindowFocus: true,
        staleTime: 10_000,
      },
    },
  });
  return qc;
}

function RequireAuth() {
  const who = useWhoami();
  const loc = useLocation();
  if (who.isLoading) return <Loading what="your session" />;
  if (who.error) return <div className="content"><ErrorBox error={who.error} prefix="Could not check your session" /></div>;
  if (!who.data) {
    const returnTo = loc.pathname + loc.search;
    return <Navigate to={returnTo === "/" ? "/login" : `/login?returnTo=${encodeURIComponent(returnTo)}`} replace />;
  }
  return (
    <SessionProvider user={who.data}>
      <Layout />
    </SessionProvider>
  );
}

function Home() {
  const { user, caps } = useSession();
  if (caps.isSuperadmin) return <Navigate to="/tenants" replace />;
  return <Navigate to={`/t/${user.tenantId}/cvlans`} replace />;
}

/** Global pages only superadmins may open; tenant users are sent home. */
function SuperadminOnly() {
  const { caps } = useSession();
  return caps.isSuperadmin ? <Outlet /> : <Navigate to="/" replace />;
}

function NotFound() {
  return (
    <div className="empty">
      <strong>There is no such page.</strong>
    </div>
  );
}

export function AppRoutes() {
  return (
    <Routes>
      <Route path="/login" element={<LoginPage />} />
      <Route element={<RequireAuth />}>
        <Route index element={<Home />} />
        <Route element={<SuperadminOnly />}>
          <Route path="tenants" element={<TenantsPage />} />
          <Route path="superadmins" element={<UsersPage />} />
          <Route path="vrouters" element={<VroutersPage />} />
          <Route path="audit" element={<AuditPage />} />
        </Route>
        <Route path="regions" element={<RegionsPage />} />
        <Route path="relays" element={<RelaysPage />} />
        <Route path="apikeys" element={<ApiKeysPage />} />
        <Route path="t/:tenantId" element={<TenantScope />}>
          <Route index element={<Navigate to="cvlans" replace />} />
          <Route path="cvlans" element={<CvlansPage />} />
          <Route path="nodes" element={<NodesPage />} />
          <Route path="addresses" element={<AddressesPage />} />
          <Route path="external-peers" element={<ExternalPeersPage />} />
          <Route path="groups" element={<GroupsPage />} />
          <Route path="policies" element={<PoliciesPage />} />
          <Route path="policies/new" element={<PolicyEditorPage />} />
          <Route path="policies/:policyId" element={<PolicyEditorPage />} />
          <Route path="tokens" element={<TokensPage />} />
          <Route path="users" element={<UsersPage />} />
          <Route path="sso" element={<SsoPage />} />
          <Route path="audit" element={<AuditPage />} />
        </Route>
        <Route path="*" element={<NotFound />} />
      </Route>
    </Routes>
  );
}

export function App() {
  const [qc] = useState(makeQueryClient);
  return (
    <QueryClientProvider client={qc}>
      <FeedbackProvider>
        <BrowserRouter>
          <AppRoutes />
        </BrowserRouter>
      </FeedbackProvider>
    </QueryClientProvider>
  );
}
