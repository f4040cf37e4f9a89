// The alert channel form: its state, what it checks before sending, and the create or update
// body it becomes. The server checks everything again (a webhook's host must be public).
import type { Schemas } from "@/api/client";

type Channel = Schemas["AlertChannel"];
export type AlertKind = Schemas["AlertChannel"]["events"][number];
export type ChannelKind = Schemas["AlertChannel"]["kind"];

export const ALERT_KINDS: { value: AlertKind; label: string }[] = [
  { value: "budget.threshold", label: "Budget at 50, 80 and 100%" },
  { value: "entitlement.limit_reached", label: "A plan limit reached" },
  { value: "invoice.issued", label: "Invoice issued" },
  { value: "payment.failed", label: "Payment failed" },
];

export interface ChannelFormState {
  kind: ChannelKind;
  target: string;
  description: string;
  /** Empty: every kind of alert (as the server reads it). */
  events: AlertKind[];
  enabled: boolean;
}

export function formFromChannel(channel?: Channel): ChannelFormState {
  return {
    kind: channel?.kind ?? "webhook",
    target: channel?.target ?? "",
    description: channel?.description ?? "",
    events: [...(channel?.events ?? [])],
    enabled: channel?.enabled ?? true,
  };
}

/** The first thing wrong with the form a person can fix before sending, or null. */
export function channelFormError(form: ChannelFormState): string | null {
  const target = form.target.trim();
  if (form.kind === "webhook") {
    if (!/^https?:\/\/[^\s/]+/i.test(target)) {
      return "URL: an http:// or https:// address the alerts are posted to";
    }
  } else if (!/^[^\s@]+@[^\s@]+$/.test(target)) {
    return "E-mail: one address, like billing@example.com";
  }
  if (form.description.length > 200) return "Description: at most 200 characters";
  return null;
}

type Checked<T> = { body: T; error: null } | { body: null; error: string };

export function createBody(form: ChannelFormState): Checked<Schemas["AlertChannelCreate"]> {
  const error = channelFormError(form);
  if (error) return { body: null, error };
  return {
    body: {
      kind: form.kind,
      target: form.target.trim(),
      description: form.description.trim(),
      events: form.events,
      enabled: form.enabled,
    },
    error: null,
  };
}

const sameEvents = (a: AlertKind[], b: AlertKind[]) =>
  a.length === b.length && a.every((kind) => b.includes(kind));

/** Only what changed, so an edit never rewrites a field someone else just set. */
export function updateBody(
  channel: Channel,
  form: ChannelFormState,
): Checked<Schemas["AlertChannelUpdate"]> {
  const error = channelFormError({ ...form, kind: channel.kind });
  if (error) return { body: null, error };
  const body: Schemas["AlertChannelUpdate"] = {};
  if (form.target.trim() !== channel.target) body.target = form.target.trim();
  if (form.description.trim() !== channel.description) body.description = form.description.trim();
  if (!sameEvents(form.events, channel.events)) body.events = form.events;
  if (form.enabled !== channel.enabled) body.enabled = form.enabled;
  return { body, error: null };
}

/** The events a channel receives, for a table cell. */
export function eventsLabel(events: AlertKind[]): string {
  if (events.length === 0) return "all alerts";
  return events.map((kind) => ALERT_KINDS.find((k) => k.value === kind)?.label ?? kind).join(", ");
}
