import { errorMessage } from "@/api/client";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input, Label } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import { useAuthConfig, useSignIn } from "@/hooks/queries/auth";
import { startOidcSignIn } from "@/lib/oidc";
import { useAuthStore } from "@/stores/auth";
import { type FormEvent, useState } from "react";
import { Navigate, useLocation } from "react-router-dom";

export function SignIn() {
  const signedIn = useAuthStore((state) => state.accessToken !== null);
  const location = useLocation();
  const config = useAuthConfig();
  const signIn = useSignIn();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [oidcError, setOidcError] = useState<string | null>(null);

  if (signedIn) {
    const from = (location.state as { from?: string } | null)?.from ?? "/";
    return <Navigate to={from} replace />;
  }

  const submit = (event: FormEvent) => {
    event.preventDefault();
    signIn.mutate({ email, password });
  };
  const oidc = config.data?.oidc;

  return (
    <div className="flex min-h-screen items-center justify-center p-4">
      <Card className="w-full max-w-sm">
        <h1 className="mb-1 text-xl font-semibold">Sign in to Apiary</h1>
        <p className="mb-5 text-sm text-slate-500">Agent swarms behind one model gateway.</p>
        <form onSubmit={submit} className="space-y-4">
          <div>
            <Label htmlFor="email">Email</Label>
            <Input
              id="email"
              type="email"
              autoComplete="username"
              required
              value={email}
              onChange={(event) => setEmail(event.target.value)}
            />
          </div>
          <div>
            <Label htmlFor="password">Password</Label>
            <Input
              id="password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(event) => setPassword(event.target.value)}
            />
          </div>
          {signIn.isError ? <ErrorState error={signIn.error} /> : null}
          <Button type="submit" className="w-full" disabled={signIn.isPending}>
            {signIn.isPending ? "Signing in…" : "Sign in"}
          </Button>
        </form>
        {oidc ? (
          <div className="mt-4 border-t border-slate-200 pt-4">
            <Button
              variant="secondary"
              className="w-full"
              onClick={() =>
                startOidcSignIn(oidc).catch((error: unknown) => setOidcError(errorMessage(error)))
              }
            >
              Sign in with your organisation (OIDC)
            </Button>
            {oidcError ? <p className="mt-2 text-sm text-red-700">{oidcError}</p> : null}
          </div>
        ) : null}
      </Card>
    </div>
  );
}
