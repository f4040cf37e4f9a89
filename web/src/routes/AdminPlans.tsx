import { ApiError, type Schemas } from "@/api/client";
import { formatBytes, formatUsdText } from "@/components/Billing/meters";
import {
  FEATURES,
  LIMITS,
  type PlanFormState,
  createBody,
  formFromPlan,
  updateBody,
} from "@/components/Plans/planForm";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { Field, FormActions, InputField } from "@/components/ui/form";
import { Checkbox, Textarea } from "@/components/ui/input";
import { Empty, ErrorState, PageHeader } from "@/components/ui/states";
import { useMe } from "@/hooks/queries/auth";
import { useArchivePlan, useCreatePlan, usePlans, useUpdatePlan } from "@/hooks/queries/plans";
import { type FormEvent, useState } from "react";

type Plan = Schemas["Plan"];

const limitText = (value: number | null, bytes = false) =>
  value === null ? "∞" : bytes ? formatBytes(value) : value.toLocaleString("en-US");

export function AdminPlans() {
  const { data: me } = useMe();
  const plans = usePlans();
  const archive = useArchivePlan();
  const [editing, setEditing] = useState<Plan | "new" | null>(null);

  if (!me?.is_super_admin) return <Empty>Only a super admin manages plans.</Empty>;
  return (
    <div>
      <PageHeader
        title="Plans"
        actions={<Button onClick={() => setEditing("new")}>Create plan</Button>}
      />
      {archive.isError ? <ErrorState error={archive.error} /> : null}
      <DataTable
        label="Plans"
        query={{
          isPending: plans.isPending,
          isError: plans.isError,
          error: plans.error,
          // The plans come as a list, not a page: there are a handful.
          data: plans.data && { items: plans.data, total: plans.data.length },
        }}
        empty="No plans."
        rowKey={(plan) => plan.key}
        rowTestId={(plan) => `plan-${plan.key}`}
        columns={[
          {
            header: "Plan",
            cell: (plan) => (
              <div>
                <div className="font-medium">{plan.name}</div>
                <div className="text-xs text-slate-500">{plan.key}</div>
              </div>
            ),
          },
          { header: "Fee / month", cell: (plan) => formatUsdText(plan.monthly_fee_usd) },
          {
            header: "Included",
            cell: (plan) =>
              plan.included_spend_usd !== null ? formatUsdText(plan.included_spend_usd) : "—",
          },
          {
            header: "Overage",
            cell: (plan) => (plan.overage ? `cost + ${Number(plan.markup_pct)}%` : "hard cap"),
          },
          { header: "Seats", cell: (plan) => limitText(plan.seats) },
          { header: "Sub-agents", cell: (plan) => limitText(plan.max_subagents) },
          { header: "Knowledge bases", cell: (plan) => limitText(plan.knowledge_bases) },
          { header: "Storage", cell: (plan) => limitText(plan.storage_bytes, true) },
          {
            header: "State",
            cell: (plan) =>
              plan.archived ? <Badge>archived</Badge> : <Badge tone="green">offered</Badge>,
          },
          {
            header: "",
            className: "text-right whitespace-nowrap",
            cell: (plan) => (
              <div className="flex justify-end gap-2">
                <Button variant="secondary" size="sm" onClick={() => setEditing(plan)}>
                  Edit
                </Button>
                {plan.archived ? null : (
                  <Button
                    variant="danger"
                    size="sm"
                    disabled={archive.isPending}
                    onClick={() => {
                      if (
                        window.confirm(`Archive the ${plan.name} plan? No tenant may be on it.`)
                      ) {
                        archive.mutate(plan.key);
                      }
                    }}
                  >
                    Delete
                  </Button>
                )}
              </div>
            ),
          },
        ]}
      />
      <Dialog
        open={editing !== null}
        title={editing === "new" || editing === null ? "Create plan" : `Edit ${editing.name}`}
        onClose={() => setEditing(null)}
      >
        {editing !== null ? (
          <PlanForm
            key={editing === "new" ? "new" : editing.key}
            plan={editing === "new" ? undefined : editing}
            onClose={() => setEditing(null)}
          />
        ) : null}
      </Dialog>
    </div>
  );
}

function PlanForm({ plan, onClose }: { plan?: Plan; onClose: () => void }) {
  const create = useCreatePlan();
  const update = useUpdatePlan();
  const [form, setForm] = useState<PlanFormState>(() => formFromPlan(plan));
  const [invalid, setInvalid] = useState<string | null>(null);
  const set = (change: Partial<PlanFormState>) => setForm({ ...form, ...change });
  // A 409 on an edit: tenants on the plan hold more than it would allow (the server names
  // them and the entitlement); the admin may apply it anyway.
  const overLimit = update.error instanceof ApiError && update.error.status === 409;

  const send = (force: boolean) => {
    if (plan) {
      const checked = updateBody(plan, form);
      if (checked.error !== null) return setInvalid(checked.error);
      setInvalid(null);
      if (Object.keys(checked.body).length === 0) return onClose();
      update.mutate({ key: plan.key, body: checked.body, force }, { onSuccess: onClose });
    } else {
      const checked = createBody(form);
      if (checked.error !== null) return setInvalid(checked.error);
      setInvalid(null);
      create.mutate(checked.body, { onSuccess: onClose });
    }
  };
  const submit = (event: FormEvent) => {
    event.preventDefault();
    send(false);
  };

  return (
    <form onSubmit={submit} className="space-y-4">
      {/* The fields scroll; the server's answer and the buttons under them stay in view. */}
      <div className="max-h-[55vh] space-y-4 overflow-y-auto pr-1">
        <div className="grid grid-cols-2 gap-3">
          <InputField
            id="plan-key"
            label="Key"
            required
            disabled={plan !== undefined}
            value={form.key}
            onValue={(key) => set({ key })}
            hint={plan ? "never changes" : "lowercase; what tenants refer to"}
          />
          <InputField
            id="plan-name"
            label="Name"
            required
            value={form.name}
            onValue={(name) => set({ name })}
          />
        </div>
        <Field id="plan-description" label="Description">
          <Textarea
            id="plan-description"
            value={form.description}
            onChange={(e) => set({ description: e.target.value })}
          />
        </Field>
        <div className="grid grid-cols-2 gap-3">
          <InputField
            id="plan-fee"
            label="Monthly fee (USD)"
            inputMode="decimal"
            value={form.monthlyFeeUsd}
            onValue={(monthlyFeeUsd) => set({ monthlyFeeUsd })}
          />
          <InputField
            id="plan-included-spend"
            label="Included spend (USD)"
            inputMode="decimal"
            placeholder="none"
            value={form.includedSpendUsd}
            onValue={(includedSpendUsd) => set({ includedSpendUsd })}
            hint="provider cost the fee covers"
          />
          <InputField
            id="plan-included-tokens"
            label="Included tokens"
            inputMode="numeric"
            placeholder="none"
            value={form.includedTokens}
            onValue={(includedTokens) => set({ includedTokens })}
          />
          <InputField
            id="plan-markup"
            label="Markup on overage (%)"
            inputMode="decimal"
            value={form.markupPct}
            onValue={(markupPct) => set({ markupPct })}
          />
        </div>
        <Checkbox
          label="Bill use beyond the allowance (unticked: the allowance is a hard cap)"
          checked={form.overage}
          onChange={(e) => set({ overage: e.target.checked })}
        />
        <fieldset>
          <legend className="mb-2 text-sm font-medium text-slate-700">
            Entitlements (empty: unlimited)
          </legend>
          <div className="grid grid-cols-2 gap-3">
            {LIMITS.map((limit) => (
              <InputField
                key={limit.name}
                id={`plan-${limit.name}`}
                label={limit.label}
                inputMode="numeric"
                placeholder="unlimited"
                value={form.limits[limit.name]}
                onValue={(value) => set({ limits: { ...form.limits, [limit.name]: value } })}
                hint={
                  limit.name === "storage_bytes" && /^\d+$/.test(form.limits.storage_bytes)
                    ? formatBytes(Number(form.limits.storage_bytes))
                    : undefined
                }
              />
            ))}
          </div>
        </fieldset>
        <fieldset className="space-y-1">
          <legend className="mb-1 text-sm font-medium text-slate-700">Features</legend>
          {FEATURES.map((feature) => (
            <Checkbox
              key={feature.name}
              label={feature.label}
              checked={form.features[feature.name]}
              onChange={(e) =>
                set({ features: { ...form.features, [feature.name]: e.target.checked } })
              }
            />
          ))}
        </fieldset>
        <InputField
          id="plan-stripe-price"
          label="Stripe price (optional)"
          placeholder="price_…"
          value={form.stripePriceId}
          onValue={(stripePriceId) => set({ stripePriceId })}
        />
      </div>
      {invalid ? (
        <p role="alert" className="text-sm text-red-700">
          {invalid}
        </p>
      ) : null}
      {overLimit ? (
        <div className="space-y-2">
          <ErrorState error={update.error} />
          <div className="flex justify-end">
            <Button
              variant="danger"
              size="sm"
              disabled={update.isPending}
              onClick={() => send(true)}
            >
              Apply anyway
            </Button>
          </div>
        </div>
      ) : null}
      <FormActions
        error={plan ? (overLimit ? null : update.error) : create.error}
        pending={create.isPending || update.isPending}
        submitLabel={plan ? "Save plan" : "Create plan"}
        onCancel={onClose}
      />
    </form>
  );
}
