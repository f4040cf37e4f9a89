import { RequireSession } from "@/components/Auth/RequireSession";
import { AppShell } from "@/components/Layout/AppShell";
import { AdminPlans } from "@/routes/AdminPlans";
import { AdminRevenue } from "@/routes/AdminRevenue";
import { AdminTenants } from "@/routes/AdminTenants";
import { Agents } from "@/routes/Agents";
import { Analytics } from "@/routes/Analytics";
import { Billing } from "@/routes/Billing";
import { ExecutionDetail } from "@/routes/ExecutionDetail";
import { Executions } from "@/routes/Executions";
import { KnowledgeBase } from "@/routes/KnowledgeBase";
import { KnowledgeBases } from "@/routes/KnowledgeBases";
import { NotFound } from "@/routes/NotFound";
import { OidcCallback } from "@/routes/OidcCallback";
import { Overview } from "@/routes/Overview";
import { Run } from "@/routes/Run";
import { SignIn } from "@/routes/SignIn";
import { ApiKeys } from "@/routes/settings/ApiKeys";
import { AuditLog } from "@/routes/settings/AuditLog";
import { Limits } from "@/routes/settings/Limits";
import { Members } from "@/routes/settings/Members";
import { Routing } from "@/routes/settings/Routing";
import { Navigate, Route, Routes } from "react-router-dom";

export function App() {
  return (
    <Routes>
      <Route path="/sign-in" element={<SignIn />} />
      <Route path="/auth/oidc/callback" element={<OidcCallback />} />
      <Route element={<RequireSession />}>
        <Route element={<AppShell />}>
          <Route index element={<Overview />} />
          <Route path="analytics" element={<Analytics />} />
          <Route path="agents" element={<Agents />} />
          <Route path="run" element={<Run />} />
          <Route path="executions" element={<Executions />} />
          <Route path="executions/:executionId" element={<ExecutionDetail />} />
          <Route path="knowledge" element={<KnowledgeBases />} />
          <Route path="knowledge/:kbId" element={<KnowledgeBase />} />
          <Route path="settings" element={<Navigate to="/settings/api-keys" replace />} />
          <Route path="settings/api-keys" element={<ApiKeys />} />
          <Route path="settings/members" element={<Members />} />
          <Route path="settings/limits" element={<Limits />} />
          <Route path="settings/routing" element={<Routing />} />
          <Route path="settings/audit" element={<AuditLog />} />
          <Route path="billing" element={<Billing />} />
          <Route path="admin/tenants" element={<AdminTenants />} />
          <Route path="admin/plans" element={<AdminPlans />} />
          <Route path="admin/revenue" element={<AdminRevenue />} />
          <Route path="*" element={<NotFound />} />
        </Route>
      </Route>
    </Routes>
  );
}
