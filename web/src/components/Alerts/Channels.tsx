import type { Schemas } from "@/api/client";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { DataTable } from "@/components/ui/data-table";
import { Dialog } from "@/components/ui/dialog";
import { Done, Field, FormActions, InputField } from "@/components/ui/form";
import { Checkbox, Select } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import {
  useAlertChannels,
  useCreateChannel,
  useDeleteChannel,
  useRotateSecret,
  useTestChannel,
  useUpdateChannel,
} from "@/hooks/queries/alerts";
import { type FormEvent, useState } from "react";
import {
  ALERT_KINDS,
  type ChannelFormState,
  type ChannelKind,
  createBody,
  eventsLabel,
  formFromChannel,
  updateBody,
} from "./channelForm";

type Channel = Schemas["AlertChannel"];

/** The tenant's alert channels: add, edit, delete, send a test, rotate a webhook's secret. */
export function AlertChannels() {
  const [channelsOffset, setChannelsOffset] = useState(0);
  const channels = useAlertChannels(channelsOffset);
  const remove = useDeleteChannel();
  const test = useTestChannel();
  const rotate = useRotateSecret();
  const [editing, setEditing] = useState<Channel | "new" | null>(null);
  const failed = [remove, test, rotate].find((mutation) => mutation.isError);
  return (
    <div>
      <div className="mb-3 flex items-center justify-between">
        <p className="text-sm text-slate-500">
          Budget thresholds, plan limits, invoices and failed payments are sent to these.
        </p>
        <Button onClick={() => setEditing("new")}>Add channel</Button>
      </div>
      {failed ? <ErrorState error={failed.error} /> : null}
      {test.isSuccess ? (
        <p className="mb-2 text-sm text-green-700">Test alert queued: see the delivery log.</p>
      ) : null}
      <DataTable
        label="Alert channels"
        query={channels}
        paging={{ offset: channelsOffset, onChange: setChannelsOffset }}
        empty="No alert channels yet: alerts reach no one."
        rowKey={(channel) => channel.id}
        rowTestId={(channel) => `channel-${channel.target}`}
        columns={[
          {
            header: "Kind",
            cell: (channel) => (channel.kind === "webhook" ? "Webhook" : "E-mail"),
          },
          {
            header: "Target",
            className: "max-w-xs truncate font-medium",
            cell: (channel) => (
              <span title={channel.description || undefined}>{channel.target}</span>
            ),
          },
          { header: "Alerts", cell: (channel) => eventsLabel(channel.events) },
          {
            header: "State",
            cell: (channel) => (
              <Badge tone={channel.enabled ? "green" : "neutral"}>
                {channel.enabled ? "enabled" : "paused"}
              </Badge>
            ),
          },
          {
            header: "",
            className: "text-right whitespace-nowrap",
            cell: (channel) => (
              <div className="flex justify-end gap-2">
                <Button
                  variant="secondary"
                  size="sm"
                  disabled={test.isPending}
                  onClick={() => test.mutate(channel.id)}
                >
                  Send test
                </Button>
                {channel.kind === "webhook" ? (
                  <Button
                    variant="secondary"
                    size="sm"
                    disabled={rotate.isPending}
                    onClick={() => {
                      if (
                        window.confirm(
                          "Rotate this webhook's secret? The old one keeps signing for a day.",
                        )
                      ) {
                        rotate.mutate(channel.id);
                      }
                    }}
                  >
                    Rotate secret
                  </Button>
                ) : null}
                <Button variant="secondary" size="sm" onClick={() => setEditing(channel)}>
                  Edit
                </Button>
                <Button
                  variant="danger"
                  size="sm"
                  disabled={remove.isPending}
                  onClick={() => {
                    if (window.confirm(`Delete the channel ${channel.target}? Its log stays.`)) {
                      remove.mutate(channel.id);
                    }
                  }}
                >
                  Delete
                </Button>
              </div>
            ),
          },
        ]}
      />
      <ChannelDialog editing={editing} onClose={() => setEditing(null)} />
      <Dialog
        open={rotate.data !== undefined}
        title="New signing secret"
        onClose={() => rotate.reset()}
      >
        {rotate.data?.secret ? (
          <Done onDone={() => rotate.reset()}>
            <SecretOnce secret={rotate.data.secret} />
            <p className="text-slate-500">
              The previous secret also signs (a second v1= signature) until{" "}
              {rotate.data.previous_secret_expires_at?.replace("T", " ").slice(0, 16) ?? "—"} UTC.
            </p>
          </Done>
        ) : null}
      </Dialog>
    </div>
  );
}

/** A webhook's signing secret: the server shows it this once. */
function SecretOnce({ secret }: { secret: string }) {
  return (
    <div className="space-y-2">
      <p>Copy this signing secret now: it is not shown again.</p>
      <code
        className="block break-all rounded bg-slate-100 p-2 text-xs"
        data-testid="channel-secret"
      >
        {secret}
      </code>
      <p className="text-slate-500">
        Each alert carries an <code>Apiary-Webhook-Signature</code> header: the HMAC-SHA256 of its
        timestamp and body with this secret (README, "Alerts").
      </p>
    </div>
  );
}

function ChannelDialog({
  editing,
  onClose,
}: {
  editing: Channel | "new" | null;
  onClose: () => void;
}) {
  const channel = editing === "new" || editing === null ? undefined : editing;
  // Keyed by the channel: the form starts from it each time the dialog opens.
  return (
    <Dialog
      open={editing !== null}
      title={channel ? `Edit ${channel.target}` : "Add alert channel"}
      onClose={onClose}
    >
      {editing !== null ? (
        <ChannelForm key={channel?.id ?? "new"} channel={channel} onClose={onClose} />
      ) : null}
    </Dialog>
  );
}

function ChannelForm({ channel, onClose }: { channel?: Channel; onClose: () => void }) {
  const create = useCreateChannel();
  const update = useUpdateChannel();
  const [form, setForm] = useState<ChannelFormState>(() => formFromChannel(channel));
  const [invalid, setInvalid] = useState<string | null>(null);
  const set = (change: Partial<ChannelFormState>) => setForm({ ...form, ...change });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (channel) {
      const checked = updateBody(channel, form);
      setInvalid(checked.error);
      if (checked.error === null) {
        update.mutate({ id: channel.id, body: checked.body }, { onSuccess: onClose });
      }
    } else {
      const checked = createBody(form);
      setInvalid(checked.error);
      if (checked.error === null) create.mutate(checked.body);
    }
  };

  if (create.data) {
    return (
      <Done onDone={onClose}>
        <p>
          {create.data.kind === "webhook" ? "Webhook" : "E-mail channel"} {create.data.target} was
          added.
        </p>
        {create.data.secret ? <SecretOnce secret={create.data.secret} /> : null}
      </Done>
    );
  }
  const isWebhook = form.kind === "webhook";
  return (
    <form onSubmit={submit} className="space-y-4">
      <Field id="channel-kind" label="Kind">
        <Select
          id="channel-kind"
          value={form.kind}
          disabled={channel !== undefined}
          onChange={(e) => set({ kind: e.target.value as ChannelKind })}
        >
          <option value="webhook">Webhook (signed HTTP POST)</option>
          <option value="email">E-mail</option>
        </Select>
      </Field>
      <InputField
        id="channel-target"
        label={isWebhook ? "URL" : "E-mail address"}
        type={isWebhook ? "url" : "email"}
        required
        placeholder={isWebhook ? "https://hooks.example.com/apiary" : "billing@example.com"}
        value={form.target}
        onValue={(target) => set({ target })}
      />
      <InputField
        id="channel-description"
        label="Description (optional)"
        value={form.description}
        onValue={(description) => set({ description })}
      />
      <fieldset className="space-y-1">
        <legend className="mb-1 text-sm font-medium text-slate-700">
          Alerts (none ticked: all of them)
        </legend>
        {ALERT_KINDS.map((kind) => (
          <Checkbox
            key={kind.value}
            label={kind.label}
            checked={form.events.includes(kind.value)}
            onChange={(e) =>
              set({
                events: e.target.checked
                  ? [...form.events, kind.value]
                  : form.events.filter((value) => value !== kind.value),
              })
            }
          />
        ))}
      </fieldset>
      <Checkbox
        label="Enabled"
        checked={form.enabled}
        onChange={(e) => set({ enabled: e.target.checked })}
      />
      {invalid ? (
        <p role="alert" className="text-sm text-red-700">
          {invalid}
        </p>
      ) : null}
      <FormActions
        error={channel ? update.error : create.error}
        pending={create.isPending || update.isPending}
        submitLabel={channel ? "Save" : "Add"}
        onCancel={onClose}
      />
    </form>
  );
}
