// A real OpenID Provider for Fabbrica's identity tests: the certified `oidc-provider`
// package with a small configuration, its own login and consent pages, and a few test-only
// endpoints under /test/ (guarded by the secret in OIDC_TEST_SECRET) that let a test make
// accounts, register clients, rotate the signing key and tamper with the next ID token.
//
// Started by tests/oidc_provider.py: `node provider.mjs`; it listens on a free port of
// 127.0.0.1 and prints one JSON line {"issuer": ...} once it serves.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';
import { SignJWT, exportJWK, generateKeyPair, importJWK, decodeProtectedHeader } from 'jose';

const SECRET = process.env.OIDC_TEST_SECRET || '';
export const MFA = 'https://refeds.org/profile/mfa';
export const SFA = 'https://refeds.org/profile/sfa';

const API_AUDIENCE = 'urn:fabbrica:api';
const accounts = new Map(); // sub -> {password, email, email_verified, name, otp, affiliation}
const clients = [];
let keys = [];
let current = null; // {provider, handle}
let tamper = null; // what to change in the next ID token the token endpoint issues
let issuer = '';

async function newKey() {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = await exportJWK(privateKey);
  return { ...jwk, kid: crypto.randomUUID(), alg: 'RS256', use: 'sig' };
}

function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${title}</title><link rel="icon" href="data:,">
</head><body><h1>${title}</h1>${body}</body></html>`;
}

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

function loginForm(uid, details, error) {
  const client = esc(details.params.client_id);
  const wanted = details.params.acr_values ? `<p id="acr">Asked for: ${esc(details.params.acr_values)}</p>` : '';
  return page('Test IdP: sign in', `<p>to continue to ${client}</p>${wanted}
${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label>Username <input id="login" name="login" autofocus></label>
<label>Password <input id="password" name="password" type="password"></label>
<label>One-time code (MFA) <input id="otp" name="otp"></label>
<button id="sign-in" type="submit">Sign in</button></form>`);
}

function consentForm(uid, details) {
  const scopes = details.prompt.details.missingOIDCScope || [];
  return page('Test IdP: authorize', `<p>${esc(details.params.client_id)} asks for: ${esc(scopes.join(' '))}</p>
<form method="post" action="/interaction/${uid}/confirm"><button id="allow" type="submit">Allow</button></form>`);
}

async function interactions(ctx, next) {
  const match = ctx.path.match(/^\/interaction\/([^/]+)(?:\/(login|confirm))?$/);
  if (!match) return next();
  const provider = current.provider;
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  const [, uid, action] = match;
  ctx.type = 'html';
  if (ctx.method === 'GET') {
    ctx.body = details.prompt.name === 'login' ? loginForm(uid, details, null) : consentForm(uid, details);
    return undefined;
  }
  const form = new URLSearchParams(await readBody(ctx.req));
  let result;
  if (action === 'login') {
    const sub = form.get('login') || '';
    const account = accounts.get(sub);
    if (!account || account.password !== form.get('password')) {
      ctx.body = loginForm(uid, details, 'Unknown user or wrong password');
      return undefined;
    }
    const mfa = Boolean(account.otp) && form.get('otp') === account.otp;
    if (!mfa && String(details.params.acr_values || '').includes(MFA)) {
      ctx.body = loginForm(uid, details, 'This sign-in needs your one-time code (MFA)');
      return undefined;
    }
    result = { login: { accountId: sub, acr: mfa ? MFA : SFA, amr: mfa ? ['pwd', 'otp'] : ['pwd'] } };
  } else {
    const { accountId } = details.session;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId, clientId: details.params.client_id });
    const missing = details.prompt.details.missingOIDCScope;
    if (missing) grant.addOIDCScope(missing.join(' '));
    const claims = details.prompt.details.missingOIDCClaims;
    if (claims) grant.addOIDCClaims(claims);
    const resources = details.prompt.details.missingResourceScopes || {};
    for (const [indicator, scopes] of Object.entries(resources)) grant.addResourceScope(indicator, scopes.join(' '));
    result = { consent: { grantId: await grant.save() } };
  }
  const redirectTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(redirectTo);
  return undefined;
}

async function tamperIdToken(ctx, next) {
  await next();
  if (!tamper || ctx.path !== '/token' || !ctx.body || typeof ctx.body.id_token !== 'string') return;
  const change = tamper;
  tamper = null;
  const [, payload] = ctx.body.id_token.split('.');
  const claims = { ...JSON.parse(Buffer.from(payload, 'base64url').toString()), ...change.claims };
  const { kid } = decodeProtectedHeader(ctx.body.id_token);
  const signer = change.foreign_key ? await newKey() : keys[0];
  const key = await importJWK(signer, 'RS256');
  ctx.body = { ...ctx.body, id_token: await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(key) };
}

function build() {
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys },
    cookies: { keys: ['fabbrica-test-idp-cookie-key'] },
    pkce: { required: () => true },
    acrValues: [SFA, MFA],
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time'], // acr and amr in every ID token
      email: ['email', 'email_verified'],
      profile: ['name'],
      affiliation: ['eduperson_scoped_affiliation'],
    },
    scopes: ['openid', 'email', 'profile', 'affiliation', 'offline_access'],
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        async userCodeInputSource(ctx, form, out, err) {
          const said = err ? '<p id="error">The code is wrong or the sign-in was interrupted</p>' : '';
          ctx.body = page('Test IdP: device sign-in', `${said}${form}
<label>Code <input id="user-code" name="user_code" form="op.deviceInputForm"></label>
<button id="continue" type="submit" form="op.deviceInputForm">Continue</button>`);
        },
        async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
          ctx.body = page('Test IdP: confirm the device', `<p>Code <code id="code">${esc(userCode)}</code></p>${form}
<button id="continue" type="submit" form="op.deviceConfirmForm">Continue</button>`);
        },
        async successSource(ctx) {
          ctx.body = page('Test IdP: signed in', '<p id="done">You can go back to your terminal.</p>');
        },
      },
      revocation: { enabled: true },
      resourceIndicators: { // JWT access tokens for Fabbrica's API (audience API_AUDIENCE)
        enabled: true,
        async getResourceServerInfo(ctx, indicator) {
          if (indicator !== API_AUDIENCE) throw new errors.InvalidTarget();
          return { scope: 'api', audience: API_AUDIENCE, accessTokenFormat: 'jwt', accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } } };
        },
      },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page('Test IdP: sign out', `${form}
<button id="logout" type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
        },
        async postLogoutSuccessSource(ctx) {
          ctx.body = page('Test IdP: signed out', '<p id="signed-out">Signed out.</p>');
        },
      },
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, sub) {
      const account = accounts.get(sub);
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            email: account.email,
            email_verified: account.email_verified,
            name: account.name,
            eduperson_scoped_affiliation: account.affiliation,
          };
        },
      };
    },
  });
  provider.use(tamperIdToken);
  provider.use(interactions);
  return { provider, handle: provider.callback() };
}

async function testApi(req, res) {
  const json = (status, value) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  if (!SECRET || req.headers['x-test-secret'] !== SECRET) return json(403, { error: 'forbidden' });
  const body = req.method === 'POST' ? JSON.parse((await readBody(req)) || '{}') : {};
  if (req.url === '/test/accounts') {
    accounts.set(body.sub, body);
    return json(200, { sub: body.sub });
  }
  if (req.url === '/test/clients') {
    const at = clients.findIndex((c) => c.client_id === body.client_id);
    if (at >= 0) clients.splice(at, 1);
    clients.push(body);
    current = build();
    return json(200, { client_id: body.client_id });
  }
  if (req.url === '/test/rotate') { // a new signing key; the old one leaves the JWKS at once
    keys = [await newKey()];
    current = build();
    return json(200, { kid: keys[0].kid });
  }
  if (req.url === '/test/tamper') {
    tamper = body;
    return json(200, {});
  }
  return json(404, { error: 'not found' });
}

const server = http.createServer((req, res) => {
  if (req.url.startsWith('/test/')) {
    testApi(req, res).catch((err) => { res.writeHead(500); res.end(String(err)); });
    return;
  }
  current.handle(req, res);
});

keys = [await newKey()];
server.listen(0, '127.0.0.1', () => {
  issuer = `http://127.0.0.1:${server.address().port}`;
  current = build();
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
