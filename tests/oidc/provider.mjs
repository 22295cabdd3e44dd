// The OpenID provider of the OIDC end-to-end tests: oidc-provider (npm, installed by
// scripts/test into target/oidc-provider) over HTTPS with the test's certificate. Its clients
// get JWT access tokens by the client-credentials grant, with the claims each client is given
// (a CI job's `repository`, `ref`, ...), the audience and the lifetime the test chose.
//
//   node provider.mjs keygen KID          prints a new private RS256 JWK
//   node provider.mjs serve CONFIG.json   serves until killed; prints "ready" once listening
//
// The module folder comes from OIDC_PROVIDER_MODULES (a node_modules folder).
import { createServer } from 'node:https';
import { readFileSync, appendFileSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [mode, ...args] = process.argv.slice(2);

if (mode === 'keygen') {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  process.stdout.write(JSON.stringify({ ...jwk, kid: args[0], use: 'sig', alg: 'RS256' }));
  process.exit(0);
}
if (mode !== 'serve') {
  console.error('usage: provider.mjs keygen KID | serve CONFIG.json');
  process.exit(2);
}

const cfg = JSON.parse(readFileSync(args[0], 'utf8'));
const modules = process.env.OIDC_PROVIDER_MODULES;
const entry = pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')).href;
const { default: Provider } = await import(entry);
const clients = Object.fromEntries(cfg.clients.map((c) => [c.client_id, c]));

const provider = new Provider(cfg.issuer, {
  // The signing keys, first one used: rotation is a restart with a new key first.
  jwks: JSON.parse(readFileSync(cfg.jwks_file, 'utf8')),
  clients: cfg.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_post',
    scope: 'push',
  })),
  scopes: ['push'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://registry.test/',
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'push',
        audience: clients[client.clientId].audience,
        accessTokenTTL: clients[client.clientId].ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => clients[token.clientId]?.claims ?? {},
});

const handle = provider.callback();
const server = createServer(
  { cert: readFileSync(cfg.cert_file), key: readFileSync(cfg.key_file) },
  (req, res) => {
    // The request log: how the tests count discovery and JWKS fetches.
    appendFileSync(cfg.request_log, `${req.method} ${req.url.split('?')[0]}\n`);
    handle(req, res);
  },
);
server.listen(cfg.port, '127.0.0.1', () => console.log('ready'));
// The test holds our stdin: when it ends (the test binary exited, even without cleaning up),
// so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
