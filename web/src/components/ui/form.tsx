import { Button } from "@/components/ui/button";
import { Input, Label } from "@/components/ui/input";
import { ErrorState } from "@/components/ui/states";
import type { InputHTMLAttributes, ReactNode } from "react";

/** A labelled form control, with an optional hint under it. */
export function Field({
  id,
  label,
  hint,
  children,
}: {
  id: string;
  label: string;
  hint?: ReactNode;
  children: ReactNode;
}) {
  return (
    <div>
      <Label htmlFor={id}>{label}</Label>
      {children}
      {hint ? <p className="mt-1 text-xs text-slate-500">{hint}</p> : null}
    </div>
  );
}

/** The foot of a dialog's form: the server's error if the last try failed, Cancel, submit. */
export function FormActions({
  error,
  pending,
  submitLabel,
  onCancel,
  disabled = false,
}: {
  error: unknown;
  pending: boolean;
  submitLabel: string;
  onCancel: () => void;
  disabled?: boolean;
}) {
  return (
    <>
      {error ? <ErrorState error={error} /> : null}
      <div className="flex justify-end gap-2">
        <Button variant="secondary" onClick={onCancel}>
          Cancel
        </Button>
        <Button type="submit" disabled={pending || disabled}>
          {submitLabel}
        </Button>
      </div>
    </>
  );
}

/** A dialog's "it worked" view: what happened, and Done. */
export function Done({ onDone, children }: { onDone: () => void; children: ReactNode }) {
  return (
    <div className="space-y-4 text-sm">
      {children}
      <div className="flex justify-end">
        <Button onClick={onDone}>Done</Button>
      </div>
    </div>
  );
}

/** A labelled text input; `onValue` gets the new text. */
export function InputField({
  id,
  label,
  hint,
  onValue,
  ...props
}: {
  id: string;
  label: string;
  hint?: ReactNode;
  onValue: (value: string) => void;
} & Omit<InputHTMLAttributes<HTMLInputElement>, "id" | "onChange">) {
  return (
    <Field id={id} label={label} hint={hint}>
      <Input id={id} onChange={(e) => onValue(e.target.value)} {...props} />
    </Field>
  );
}
