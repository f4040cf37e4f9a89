import type { Schemas } from "@/api/client";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Input, Label } from "@/components/ui/input";
import { ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useLimits, useUpdateLimits } from "@/hooks/queries/limits";
import { formatDateTime } from "@/lib/format";
import { can } from "@/lib/permissions";
import { type FormEvent, useEffect, useState } from "react";

/** The limits this form edits: fields of the server's `LimitsUpdate`. */
type Field = Exclude<keyof Schemas["LimitsUpdate"], "soft_limit_ratio">;

const FIELDS: { name: Field; label: string; hint: string; integer: boolean }[] = [
  {
    name: "monthly_budget_usd",
    label: "Monthly budget (USD)",
    hint: "calls are refused past it",
    integer: false,
  },
  {
    name: "tenant_rpm",
    label: "Tenant requests / minute",
    hint: "all keys and users together",
    integer: true,
  },
  {
    name: "tenant_tpm",
    label: "Tenant tokens / minute",
    hint: "all keys and users together",
    integer: true,
  },
  { name: "key_rpm", label: "Requests / minute per key", hint: "each API key", integer: true },
  { name: "key_tpm", label: "Tokens / minute per key", hint: "each API key", integer: true },
];

/** Form text -> the PATCH value: empty means "no limit" (null). */
export function parseLimit(text: string, integer: boolean): number | null | "invalid" {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  const value = Number(trimmed);
  if (!Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value)))
    return "invalid";
  return value;
}

export function Limits() {
  const { data: me } = useMe();
  const limits = useLimits();
  const update = useUpdateLimits();
  const mayWrite = can(me, "budgets:write");
  const [values, setValues] = useState<Record<Field, string>>({
    monthly_budget_usd: "",
    tenant_rpm: "",
    tenant_tpm: "",
    key_rpm: "",
    key_tpm: "",
  });
  const [softPercent, setSoftPercent] = useState("80");
  const [invalid, setInvalid] = useState<string | null>(null);

  useEffect(() => {
    if (!limits.data) return;
    const data = limits.data;
    setValues({
      monthly_budget_usd: data.monthly_budget_usd?.toString() ?? "",
      tenant_rpm: data.tenant_rpm?.toString() ?? "",
      tenant_tpm: data.tenant_tpm?.toString() ?? "",
      key_rpm: data.key_rpm?.toString() ?? "",
      key_tpm: data.key_tpm?.toString() ?? "",
    });
    setSoftPercent(String(Math.round(data.soft_limit_ratio * 100)));
  }, [limits.data]);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const body: Schemas["LimitsUpdate"] = {};
    for (const field of FIELDS) {
      const parsed = parseLimit(values[field.name], field.integer);
      if (parsed === "invalid") {
        setInvalid(
          `${field.label}: enter a ${field.integer ? "whole " : ""}number, or leave it empty`,
        );
        return;
      }
      body[field.name] = parsed;
    }
    const soft = Number(softPercent);
    if (!(soft > 0 && soft <= 100)) {
      setInvalid("Warning threshold: a percentage above 0 and at most 100");
      return;
    }
    body.soft_limit_ratio = soft / 100;
    setInvalid(null);
    update.mutate(body);
  };

  if (limits.isPending) return <Loading what="Loading limits" />;
  if (limits.isError) return <ErrorState error={limits.error} />;

  return (
    <div>
      <PageHeader title="Budgets & rate limits" />
      <Card className="max-w-xl">
        <form onSubmit={submit} className="space-y-4">
          {FIELDS.map((field) => (
            <div key={field.name}>
              <Label htmlFor={field.name}>{field.label}</Label>
              <Input
                id={field.name}
                inputMode={field.integer ? "numeric" : "decimal"}
                placeholder="no limit"
                disabled={!mayWrite}
                value={values[field.name]}
                onChange={(e) => setValues({ ...values, [field.name]: e.target.value })}
              />
              <p className="mt-1 text-xs text-slate-500">{field.hint}; empty: no limit</p>
            </div>
          ))}
          <div>
            <Label htmlFor="soft">Warning threshold (% of budget)</Label>
            <Input
              id="soft"
              inputMode="numeric"
              disabled={!mayWrite}
              value={softPercent}
              onChange={(e) => setSoftPercent(e.target.value)}
            />
          </div>
          {invalid ? (
            <p role="alert" className="text-sm text-red-700">
              {invalid}
            </p>
          ) : null}
          {update.isError ? <ErrorState error={update.error} /> : null}
          {update.isSuccess ? <p className="text-sm text-green-700">Saved.</p> : null}
          <div className="flex items-center justify-between">
            <span className="text-xs text-slate-500">
              Last changed {formatDateTime(limits.data.updated_at)}
            </span>
            {mayWrite ? (
              <Button type="submit" disabled={update.isPending}>
                Save limits
              </Button>
            ) : null}
          </div>
        </form>
      </Card>
    </div>
  );
}
