// Live ML outputs over NATS WebSocket, admitted by entra-callout with an Entra access token.
//
// Configuration is the page's query string:
//   ws=wss://nats.example.com           where nats-server's websocket listener is
//   subject=contoso.vision.ml.outputs.> what to show
// and where the token comes from, one of:
//   token_endpoint=URL                  DEV-ONLY: `entra-callout dev`'s /dev-only/token endpoint
//   client_id=GUID&tenant=GUID[&scope=api://nats-auth/Nats.Connect]
//                                       production: MSAL.js (msal-browser, loaded by the page as
//                                       window.msal, see README) signs the user in and
//                                       acquireTokenSilent() gets and refreshes the token.
//
// nats.ws is served from node_modules next to this page (npm ci), never from a CDN.
import { connect, tokenAuthenticator, Events } from "./node_modules/nats.ws/esm/nats.js";

const params = new URLSearchParams(location.search);
const servers = params.get("ws") ?? "ws://127.0.0.1:4280";
const subject = params.get("subject") ?? "contoso.vision.ml.outputs.>";
const statusEl = document.getElementById("status");
const whoEl = document.getElementById("who");
const rows = document.getElementById("outputs");

function status(state, text) {
  statusEl.dataset.state = state;
  statusEl.textContent = text;
}

// --- tokens -------------------------------------------------------------------------------

// DEV-ONLY: tokens signed with the public dev key, which only `entra-callout dev` trusts.
async function devToken() {
  const response = await fetch(params.get("token_endpoint"), { cache: "no-store" });
  if (!response.ok) throw new Error(`token endpoint: ${response.status} ${await response.text()}`);
  return (await response.text()).trim();
}

// Production: MSAL.js. acquireTokenSilent answers from its cache and refreshes with its
// refresh token when the access token is close to expiry; interaction only when that fails.
let msalApp;
async function msalToken() {
  if (!window.msal) throw new Error("MSAL.js is not loaded (see examples/browser/README.md)");
  const scopes = [params.get("scope") ?? "api://nats-auth/Nats.Connect"];
  if (!msalApp) {
    msalApp = new window.msal.PublicClientApplication({
      auth: {
        clientId: params.get("client_id"),
        authority: `https://login.microsoftonline.com/${params.get("tenant")}`,
        redirectUri: location.origin + location.pathname,
      },
      cache: { cacheLocation: "sessionStorage" },
    });
    await msalApp.initialize();
    await msalApp.handleRedirectPromise();
  }
  let account = msalApp.getAllAccounts()[0];
  if (!account) {
    await msalApp.loginRedirect({ scopes });
    return new Promise(() => {}); // the page navigates away
  }
  try {
    return (await msalApp.acquireTokenSilent({ scopes, account })).accessToken;
  } catch (e) {
    if (e instanceof window.msal.InteractionRequiredAuthError) {
      await msalApp.acquireTokenRedirect({ scopes, account });
    }
    throw e;
  }
}

const fetchToken = params.has("token_endpoint") ? devToken : msalToken;

function expiry(jwt) {
  // Read without verifying, only to schedule the refresh; entra-callout verifies the token.
  const claims = JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  return claims.exp * 1000;
}

// nats.ws asks for the token synchronously on every (re)connect, so a fresh one is kept ready:
// refreshed when a fifth of its lifetime is left. When the minted credentials expire,
// nats-server closes the connection ("user authentication expired") and nats.ws reconnects
// with the current token. Messages published while it reconnects are not shown (core NATS
// delivers at most once).
let token = "";
async function keepTokenFresh() {
  token = await fetchToken();
  const claims = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
  whoEl.textContent = `tenant ${claims.tid} · ${claims.name ?? claims.oid}`;
  const lifetime = expiry(token) - Date.now();
  setTimeout(() => keepTokenFresh().catch((e) => status("refused", `token: ${e.message}`)),
    Math.max(1000, lifetime * 0.8));
}

// --- NATS ---------------------------------------------------------------------------------

function show(msg) {
  let output;
  try { output = JSON.parse(new TextDecoder().decode(msg.data)); } catch { output = {}; }
  const tr = document.createElement("tr");
  tr.dataset.inputId = output.input_id ?? "";
  for (const [cls, text] of [["time", new Date().toLocaleTimeString()], ["subject", msg.subject],
    ["input", output.input_id], ["label", output.label],
    ["score", typeof output.score === "number" ? output.score.toFixed(2) : ""]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = text ?? "";
    tr.appendChild(td);
  }
  rows.prepend(tr);
  while (rows.children.length > 50) rows.lastChild.remove();
}

async function main() {
  await keepTokenFresh();
  let nc;
  try {
    nc = await connect({
      servers,
      name: "ml-browser-dashboard",
      authenticator: tokenAuthenticator(() => token),
      maxReconnectAttempts: -1,
    });
  } catch (e) {
    // nats-server never says why (the service's audit log does): AUTHORIZATION_VIOLATION.
    status("refused", `refused: ${e.code ?? e.message}`);
    return;
  }
  status("connected", `connected to ${servers}`);
  (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) status("connecting", "reconnecting…");
      if (s.type === Events.Reconnect) status("connected", `connected to ${servers}`);
    }
  })();
  nc.closed().then((err) => status("closed", `closed${err ? ": " + (err.code ?? err.message) : ""}`));
  for await (const msg of nc.subscribe(subject)) show(msg);
}

main().catch((e) => status("refused", `error: ${e.message}`));
