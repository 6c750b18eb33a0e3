// Small form building blocks and a dialog that renders simple entity forms from field specs.
import { useId, useState, type FormEvent, type ReactNode } from "react";
import { Dialog } from "./Dialog";
import { ErrorBox } from "./bits";
import { useFeedback } from "./feedback";

export type Values = Record<string, string | boolean>;

interface Base {
  name: string;
  label: string;
  help?: ReactNode;
  required?: boolean;
  disabled?: boolean;
}
export type FieldSpec =
  | (Base & { kind: "text" | "password" | "textarea" | "number" | "email" | "url"; placeholder?: string; autoComplete?: string })
  | (Base & { kind: "select"; options: { value: string; label: string }[] })
  | (Base & { kind: "checkbox" })
  | (Base & { kind: "list"; placeholder?: string });

/** Comma/space/newline separated text → trimmed, non-empty items. */
export function splitList(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

export const joinList = (items: readonly string[] | undefined) => (items ?? []).join(", ");

export function Field({ label, help, children, id }: { label: string; help?: ReactNode; children: ReactNode; id: string }) {
  return (
    <div className="field">
      <label htmlFor={id}>{label}</label>
      {children}
      {help && <div className="help">{help}</div>}
    </div>
  );
}

export function FieldInput({ spec, value, onChange }: { spec: FieldSpec; value: string | boolean; onChange: (v: string | boolean) => void }) {
  const id = useId();
  if (spec.kind === "checkbox") {
    return (
      <div className="field checkbox">
        <label>
          <input type="checkbox" checked={value === true} disabled={spec.disabled} onChange={(e) => onChange(e.target.checked)} />{" "}
          {spec.label}
        </label>
        {spec.help && <div className="help">{spec.help}</div>}
      </div>
    );
  }
  const v = typeof value === "string" ? value : "";
  let input: ReactNode;
  if (spec.kind === "select") {
    input = (
      <select id={id} name={spec.name} value={v} required={spec.required} disabled={spec.disabled} onChange={(e) => onChange(e.target.value)}>
        {!spec.options.some((o) => o.value === v) && <option value={v}>{v === "" ? "Choose…" : v}</option>}
        {spec.options.map((o) => (
          <option key={o.value} value={o.value}>
            {o.label}
          </option>
        ))}
      </select>
    );
  } else if (spec.kind === "textarea") {
    input = (
      <textarea id={id} name={spec.name} value={v} required={spec.required} disabled={spec.disabled} placeholder={spec.placeholder} onChange={(e) => onChange(e.target.value)} rows={3} />
    );
  } else {
    input = (
      <input
        id={id}
        name={spec.name}
        type={spec.kind === "list" ? "text" : spec.kind}
        value={v}
        required={spec.required}
        disabled={spec.disabled}
        placeholder={spec.placeholder}
        autoComplete={"autoComplete" in spec ? spec.autoComplete : "off"}
        onChange={(e) => onChange(e.target.value)}
      />
    );
  }
  return (
    <Field label={spec.required ? `${spec.label} *` : spec.label} help={spec.help} id={id}>
      {input}
    </Field>
  );
}

/**
 * A dialog with a form built from `fields`. `onSubmit` does the request; its error (the
 * server's message) is shown above the buttons and the dialog stays open.
 */
export function FormDialog({
  title,
  fields,
  initial,
  submitLabel,
  onSubmit,
  onClose,
  children,
  wide,
  success,
}: {
  title: string;
  success?: string;
  fields: FieldSpec[];
  initial: Values;
  submitLabel: string;
  onSubmit: (v: Values) => Promise<unknown>;
  onClose: () => void;
  children?: (v: Values, set: (name: string, value: string | boolean) => void) => ReactNode;
  wide?: boolean;
}) {
  const [values, setValues] = useState<Values>(initial);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const { toast } = useFeedback();
  const set = (name: string, value: string | boolean) => setValues((v) => ({ ...v, [name]: value }));
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onSubmit(values);
      if (success) toast(success);
      onClose();
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  return (
    <Dialog title={title} onClose={onClose} wide={wide}>
      <form onSubmit={submit} noValidate={false}>
        {fields.map((f) => (
          <FieldInput key={f.name} spec={f} value={values[f.name] ?? ""} onChange={(v) => set(f.name, v)} />
        ))}
        {children?.(values, set)}
        <ErrorBox error={error} />
        <div className="actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="primary" disabled={busy}>
            {busy ? "Saving…" : submitLabel}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

export const str = (v: Values, k: string) => {
  const x = v[k];
  return typeof x === "string" ? x.trim() : "";
};
export const bool = (v: Values, k: string) => v[k] === true;
