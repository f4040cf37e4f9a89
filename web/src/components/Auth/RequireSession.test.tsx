import { useAuthStore } from "@/stores/auth";
import { act, cleanup, render, screen } from "@testing-library/react";
import { MemoryRouter, Route, Routes } from "react-router-dom";
import { afterEach, describe, expect, it } from "vitest";
import { RequireSession } from "./RequireSession";

afterEach(cleanup);

function renderAt(path: string) {
  return render(
    <MemoryRouter initialEntries={[path]} future={{ v7_startTransition: true }}>
      <Routes>
        <Route path="/sign-in" element={<p>the sign-in page</p>} />
        <Route element={<RequireSession />}>
          <Route path="/agents" element={<p>the agents page</p>} />
        </Route>
      </Routes>
    </MemoryRouter>,
  );
}

describe("RequireSession", () => {
  it("waits for the refresh cookie on a page load instead of sending the user to sign in", () => {
    useAuthStore.setState({ accessToken: null, expiresAt: null, status: "restoring" });
    renderAt("/agents");
    expect(screen.getByText("Signing in…")).toBeTruthy();
    expect(screen.queryByText("the sign-in page")).toBeNull();
    act(() => useAuthStore.getState().setSession({ access_token: "a", expires_in: 900 }));
    expect(screen.getByText("the agents page")).toBeTruthy();
  });

  it("sends the user to sign in once there is no session to restore", () => {
    useAuthStore.setState({ accessToken: null, expiresAt: null, status: "restoring" });
    renderAt("/agents");
    act(() => useAuthStore.getState().clear());
    expect(screen.getByText("the sign-in page")).toBeTruthy();
  });
});
