import { Loading } from "@/components/ui/states";
import { useAuthStore } from "@/stores/auth";
import { Navigate, Outlet, useLocation } from "react-router-dom";

/** Pages behind it need a session; without one (or once a 401 clears it) -> sign-in. */
export function RequireSession() {
  const status = useAuthStore((state) => state.status);
  const location = useLocation();
  // Just loaded: the refresh cookie may still bring the session back.
  if (status === "restoring") return <Loading what="Signing in" />;
  if (status === "signedOut") {
    return <Navigate to="/sign-in" replace state={{ from: location.pathname }} />;
  }
  return <Outlet />;
}
