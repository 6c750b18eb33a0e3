/** Leaves the single-page app (SSO goes through the control plane and the identity provider). */
export function fullPageNavigate(url: string): void {
  window.location.assign(url);
}
