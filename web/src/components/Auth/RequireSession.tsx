import { useAuthStore } from "@/stores/auth";
import { Navigate, Outlet, useLocation } from "react-router-dom";

/** Pages behind it need a session; without one (or once a 401 clears it) -> sign-in. */
export function RequireSession() {
  const signedIn = useAuthStore((state) => state.accessToken !== null);
  const location = useLocation();
  if (!signedIn) {
    return <Navigate to="/sign-in" replace state={{ from: location.pathname }} />;
  }
  return <Outlet />;
}
