// A real OpenID Connect provider (the certified `oidc-provider` package) on loopback, for the
// single sign-on browser test. Accounts are fixed; any password is accepted by its dev login page.
import http from 'node:http';
import Provider from 'oidc-provider';

export const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, name: 'Alice Example', groups: ['eng', 'staff'] },
  mallory: { email: 'mallory@evil.test', email_verified: true, name: 'Mallory', groups: ['eng'] },
};

/** Listens first (the issuer URL is needed to configure CloudVLAN, whose provider id is part
 *  of the redirect URI); `configure(redirectUri)` then starts answering. */
export async function startIdp({ clientId = 'cvlan-ui', clientSecret = 'idp-test-secret' } = {}) {
  const server = http.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const configure = (redirectUri) => {
    const provider = new Provider(issuer, {
      clients: [{
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
      }],
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
      conformIdTokenClaims: false,
      cookies: { keys: ['e2e-only-cookie-key'] },
      features: { devInteractions: { enabled: true } },
      async findAccount(_ctx, id) {
        const a = ACCOUNTS[id];
        if (!a) return undefined;
        return { accountId: id, claims: async () => ({ sub: id, ...a }) };
      },
    });
    server.on('request', provider.callback());
  };
  return { issuer, clientId, clientSecret, configure, close: () => new Promise((r) => server.close(r)) };
}

