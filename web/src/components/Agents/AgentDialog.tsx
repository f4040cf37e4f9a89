import type { Schemas } from "@/api/client";
import { Dialog } from "@/components/ui/dialog";
import { Field, FormActions, InputField } from "@/components/ui/form";
import { Checkbox, Input, Textarea } from "@/components/ui/input";
import { useAgentTools, useCreateAgent, useUpdateAgent } from "@/hooks/queries/agents";
import { useMe } from "@/hooks/queries/auth";
import { useAllKnowledgeBases } from "@/hooks/queries/knowledge";
import { useModels } from "@/hooks/queries/models";
import { can } from "@/lib/permissions";
import { type FormEvent, useState } from "react";
import { type AgentFormState, checkAgentForm, formFromAgent, toggle, toolLabel } from "./agentForm";

/** Create an agent (no `agent`) or change one, which makes a new version. */
export function AgentDialog({ agent, onClose }: { agent?: Schemas["Agent"]; onClose: () => void }) {
  const { data: me } = useMe();
  const create = useCreateAgent();
  const update = useUpdateAgent();
  const mutation = agent ? update : create;
  const models = useModels(can(me, "gateway:call"));
  const bases = useAllKnowledgeBases();
  const tools = useAgentTools();
  const [form, setForm] = useState<AgentFormState>(() => formFromAgent(agent));
  const [invalid, setInvalid] = useState<string | null>(null);
  const set = (change: Partial<AgentFormState>) =>
    setForm((current) => ({ ...current, ...change }));

  const submit = (event: FormEvent) => {
    event.preventDefault();
    const { body, error } = checkAgentForm(form);
    setInvalid(error);
    if (!body) return;
    const done = { onSuccess: onClose };
    if (agent) update.mutate({ id: agent.id, body }, done);
    else create.mutate(body, done);
  };

  return (
    <Dialog open title={agent ? `Edit ${agent.name}` : "Create agent"} onClose={onClose}>
      <form onSubmit={submit} className="max-h-[75vh] space-y-4 overflow-y-auto pr-1">
        <InputField
          id="agent-name"
          label="Name"
          required
          value={form.name}
          onValue={(value) => set({ name: value })}
        />
        <InputField
          id="agent-description"
          label="Description"
          value={form.description}
          onValue={(value) => set({ description: value })}
        />
        <Field
          id="agent-prompt"
          label="System prompt"
          hint="Given to the orchestrator and every sub-agent"
        >
          <Textarea
            id="agent-prompt"
            rows={3}
            value={form.systemPrompt}
            onChange={(e) => set({ systemPrompt: e.target.value })}
          />
        </Field>
        <div className="grid grid-cols-2 gap-3">
          <Field id="agent-model" label="Model or route">
            <Input
              id="agent-model"
              list="agent-models"
              value={form.model}
              onChange={(e) => set({ model: e.target.value })}
            />
            <datalist id="agent-models">
              {(models.data ?? []).map((model) => (
                <option key={model.id} value={model.id} />
              ))}
            </datalist>
          </Field>
          <InputField
            id="agent-temperature"
            label="Temperature"
            inputMode="decimal"
            value={form.temperature}
            onValue={(value) => set({ temperature: value })}
          />
          <InputField
            id="agent-max-subagents"
            label="Max sub-agents"
            inputMode="numeric"
            value={form.maxSubagents}
            onValue={(value) => set({ maxSubagents: value })}
          />
          <InputField
            id="agent-timeout"
            label="Timeout (s)"
            inputMode="numeric"
            value={form.timeoutS}
            onValue={(value) => set({ timeoutS: value })}
          />
          <InputField
            id="agent-cost"
            label="Cost cap per run (USD)"
            hint="Empty: no cap"
            inputMode="decimal"
            value={form.maxCostUsd}
            onValue={(value) => set({ maxCostUsd: value })}
          />
        </div>
        <fieldset className="space-y-1">
          <legend className="mb-1 text-sm font-medium text-slate-700">Tools</legend>
          {(tools.data ?? []).map((tool) => (
            <Checkbox
              key={tool.name}
              label={toolLabel(tool.name)}
              hint={tool.description}
              checked={form.tools.includes(tool.name)}
              onChange={(e) => set({ tools: toggle(form.tools, tool.name, e.target.checked) })}
            />
          ))}
        </fieldset>
        <fieldset className="space-y-1">
          <legend className="mb-1 text-sm font-medium text-slate-700">Knowledge bases</legend>
          {bases.data?.items.length ? (
            bases.data.items.map((base) => (
              <Checkbox
                key={base.id}
                label={base.name}
                checked={form.knowledgeBaseIds.includes(base.id)}
                onChange={(e) =>
                  set({
                    knowledgeBaseIds: toggle(form.knowledgeBaseIds, base.id, e.target.checked),
                  })
                }
              />
            ))
          ) : (
            <p className="text-xs text-slate-500">
              {bases.isPending ? "Loading…" : "None yet: create one under Knowledge bases."}
            </p>
          )}
        </fieldset>
        <FormActions
          error={invalid ? new Error(invalid) : mutation.error}
          pending={mutation.isPending}
          submitLabel={agent ? "Save new version" : "Create"}
          onCancel={onClose}
        />
      </form>
    </Dialog>
  );
}
