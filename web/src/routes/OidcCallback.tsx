import { errorMessage } from "@/api/client";
import { Card } from "@/components/ui/card";
import { Loading } from "@/components/ui/states";
import { useOidcSignIn } from "@/hooks/queries/auth";
import { readOidcCallback } from "@/lib/oidc";
import { useEffect, useRef, useState } from "react";
import { Link, Navigate } from "react-router-dom";

export function OidcCallback() {
  const signIn = useOidcSignIn();
  const [error, setError] = useState<string | null>(null);
  const { mutate } = signIn;
  const started = useRef(false);

  useEffect(() => {
    // The callback works once (its attempt is then forgotten): never read it twice.
    if (started.current) return;
    started.current = true;
    try {
      mutate(readOidcCallback(window.location.search));
    } catch (problem) {
      setError(errorMessage(problem));
    }
  }, [mutate]);

  if (signIn.isSuccess) return <Navigate to="/" replace />;
  const message = error ?? (signIn.isError ? errorMessage(signIn.error) : null);
  if (!message) return <Loading what="Signing in" />;
  return (
    <div className="flex min-h-screen items-center justify-center p-4">
      <Card className="max-w-sm">
        <p role="alert" className="mb-3 text-sm text-red-700">
          {message}
        </p>
        <Link to="/sign-in" className="text-sm underline">
          Back to sign-in
        </Link>
      </Card>
    </div>
  );
}
