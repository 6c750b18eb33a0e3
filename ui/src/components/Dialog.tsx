import { useEffect, useId, useRef, type ReactNode } from "react";

/** A modal dialog: focus moves in, Escape closes, the page behind is inert to clicks. */
export function Dialog({
  title,
  onClose,
  children,
  wide,
}: {
  title: string;
  onClose: () => void;
  children: ReactNode;
  wide?: boolean;
}) {
  const ref = useRef<HTMLDivElement>(null);
  const titleId = useId();
  const previous = useRef<Element | null>(null);
  useEffect(() => {
    previous.current = document.activeElement;
    const el = ref.current;
    if (el?.contains(document.activeElement)) return; // an autoFocus child already took it
    const first = el?.querySelector<HTMLElement>("input:not([type=hidden]):not([disabled]), select, textarea, button.primary");
    (first ?? el)?.focus();
  }, []);
  useEffect(
    () => () => {
      if (previous.current instanceof HTMLElement) previous.current.focus();
    },
    [],
  );
  return (
    <div className="backdrop" onMouseDown={(e) => e.target === e.currentTarget && onClose()}>
      <div
        ref={ref}
        className={wide ? "dialog wide" : "dialog"}
        role="dialog"
        aria-modal="true"
        aria-labelledby={titleId}
        tabIndex={-1}
        onKeyDown={(e) => {
          if (e.key === "Escape") {
            e.stopPropagation();
            onClose();
          }
        }}
      >
        <header className="dialog-head">
          <h2 id={titleId}>{title}</h2>
          <button type="button" className="icon" aria-label="Close" onClick={onClose}>
            ×
          </button>
        </header>
        <div className="dialog-body">{children}</div>
      </div>
    </div>
  );
}
