// A real OpenID Connect provider for the tests: npm `oidc-provider` (certified, pinned in
// deploy/setup.sh, installed in ./.oidc-provider) on 127.0.0.1, with one client and its
// development login pages (devInteractions: any login name and password sign in as that name;
// "Cancel" ends the flow with error=access_denied).
//
//   node tests/oidc/provider.mjs PORT REDIRECT_URI [CLIENT_SECRET]
//
// The issuer is http://127.0.0.1:PORT; the client is `iiif-shim`; without CLIENT_SECRET it is
// a public client (PKCE alone). PKCE is required of every client. Its signing key is made at
// start (RS256), so a test's tokens are signed by a key of that run only.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const folder = process.env.OIDC_PROVIDER_DIR || path.join(root, '.oidc-provider');
const require = createRequire(path.join(folder, 'package.json'));
const { default: Provider } = await import(require.resolve('oidc-provider'));

const [port, redirectUri, clientSecret] = process.argv.slice(2);
if (!port || !redirectUri) {
  console.error('usage: provider.mjs PORT REDIRECT_URI [CLIENT_SECRET]');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };

const client = {
  client_id: 'iiif-shim',
  redirect_uris: [redirectUri],
  response_types: ['code'],
  grant_types: ['authorization_code'],
  ...(clientSecret
    ? { client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic' }
    : { token_endpoint_auth_method: 'none' }),
};

const provider = new Provider(issuer, {
  clients: [client],
  jwks: { keys: [jwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: { openid: ['sub'], email: ['email'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, email: `${id}@example.test` }; } };
  },
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening at ${issuer}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
