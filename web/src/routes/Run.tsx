import { type RunFormState, checkRunForm, emptyRunForm } from "@/components/Run/runForm";
import { Button } from "@/components/ui/button";
import { Card } from "@/components/ui/card";
import { Field, InputField } from "@/components/ui/form";
import { Input, Select, Textarea } from "@/components/ui/input";
import { Empty, ErrorState, Loading, PageHeader } from "@/components/ui/states";
import { useAllAgents } from "@/hooks/queries/agents";
import { useMe } from "@/hooks/queries/auth";
import { useStartExecution } from "@/hooks/queries/executions";
import { can } from "@/lib/permissions";
import { type FormEvent, useState } from "react";
import { Link, useNavigate, useSearchParams } from "react-router-dom";

/** Start an execution; its live view is the execution's page. */
export function Run() {
  const { data: me } = useMe();
  const agents = useAllAgents();
  const start = useStartExecution();
  const navigate = useNavigate();
  const [params] = useSearchParams();
  const [form, setForm] = useState<RunFormState>({
    ...emptyRunForm,
    agentId: params.get("agent") ?? "",
  });
  const [invalid, setInvalid] = useState<string | null>(null);
  const set = (change: Partial<RunFormState>) => setForm((current) => ({ ...current, ...change }));

  if (!can(me, "executions:run")) {
    return (
      <div>
        <PageHeader title="Run" />
        <Empty>Your role cannot start executions; see past ones under Executions.</Empty>
      </div>
    );
  }
  if (agents.isPending) return <Loading what="Loading agents" />;
  if (agents.isError) return <ErrorState error={agents.error} />;
  const items = agents.data.items;
  const agentId = form.agentId || items[0]?.id || "";
  const agent = items.find((a) => a.id === agentId);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const { body, error } = checkRunForm({ ...form, agentId });
    setInvalid(error);
    if (body) {
      start.mutate(body, { onSuccess: (execution) => navigate(`/executions/${execution.id}`) });
    }
  };

  return (
    <div>
      <PageHeader title="Run" />
      {items.length === 0 ? (
        <Empty>
          No agents yet.{" "}
          <Link to="/agents" className="underline">
            Create one
          </Link>{" "}
          first.
        </Empty>
      ) : (
        <Card className="max-w-3xl">
          <form onSubmit={submit} className="space-y-4">
            <Field id="run-agent" label="Agent">
              <Select
                id="run-agent"
                value={agentId}
                onChange={(e) => set({ agentId: e.target.value })}
              >
                {items.map((a) => (
                  <option key={a.id} value={a.id}>
                    {a.name} (v{a.version}, {a.model})
                  </option>
                ))}
              </Select>
            </Field>
            <Field id="run-task" label="Task">
              <Textarea
                id="run-task"
                rows={4}
                required
                placeholder="e.g. Plan three days in Rome for a family of four"
                value={form.task}
                onChange={(e) => set({ task: e.target.value })}
              />
            </Field>
            <div className="grid grid-cols-2 gap-3 md:grid-cols-4">
              <Field id="run-mode" label="Mode">
                <Select
                  id="run-mode"
                  value={form.mode}
                  onChange={(e) => set({ mode: e.target.value as RunFormState["mode"] })}
                >
                  <option value="swarm">Swarm</option>
                  <option value="single">Single agent</option>
                </Select>
              </Field>
              <Field
                id="run-max-agents"
                label="Max agents"
                hint={`Agent allows ${agent?.max_subagents ?? "?"}`}
              >
                <Input
                  id="run-max-agents"
                  inputMode="numeric"
                  disabled={form.mode === "single"}
                  value={form.maxAgents}
                  onChange={(e) => set({ maxAgents: e.target.value })}
                />
              </Field>
              <InputField
                id="run-budget"
                label="Budget (USD)"
                hint="Spending stops at it"
                inputMode="decimal"
                value={form.budgetUsd}
                onValue={(value) => set({ budgetUsd: value })}
              />
              <Field
                id="run-deadline"
                label="Deadline (s)"
                hint={`Default ${agent?.timeout_s ?? 300} s`}
              >
                <Input
                  id="run-deadline"
                  inputMode="numeric"
                  value={form.deadlineS}
                  onChange={(e) => set({ deadlineS: e.target.value })}
                />
              </Field>
            </div>
            {invalid || start.isError ? (
              <ErrorState error={invalid ? new Error(invalid) : start.error} />
            ) : null}
            <div className="flex justify-end">
              <Button type="submit" disabled={start.isPending}>
                {start.isPending ? "Starting…" : "Start"}
              </Button>
            </div>
          </form>
        </Card>
      )}
    </div>
  );
}
