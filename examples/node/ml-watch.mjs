// A Node.js consumer of the ML outputs through entra-callout, with @nats-io/transport-node.
//
//   NATS_URL=nats://127.0.0.1:4222 \
//   NATS_TOKEN_COMMAND="entra-callout dev token --group c3d9e1a7-2b4f-4c8e-9a61-0f5d7b2e8c43" \
//     node ml-watch.mjs [--seconds N]
//
// tokenAuthenticator takes a function, called synchronously on every connect and reconnect;
// here it runs NATS_TOKEN_COMMAND (in Azure: `az account get-access-token ...`, or keep a token
// from @azure/identity refreshed in the background and return it). When the minted credentials
// expire, nats-server closes the connection with "user authentication expired"; the client
// reconnects and asks for a token again (it gives up only when the same authentication error
// repeats on consecutive attempts). Messages published while it reconnects are not received
// (core NATS delivers at most once).
//
// Prints one JSON line per event: {"status": ...} for connection events, {"msg": ...} for outputs,
// and {"summary": ...} when --seconds ends it.
import { execFileSync } from "node:child_process";
import { connect } from "@nats-io/transport-node";
import { tokenAuthenticator } from "@nats-io/nats-core";

const command = process.env.NATS_TOKEN_COMMAND;
if (!command) {
  console.error("set NATS_TOKEN_COMMAND to a command that prints an access token");
  process.exit(2);
}
const [file, ...args] = command.split(/\s+/).filter(Boolean);
let tokens = 0;
const fetchToken = () => {
  tokens += 1;
  return execFileSync(file, args, { encoding: "utf8" }).trim();
};
const secondsArg = process.argv.indexOf("--seconds");
const seconds = secondsArg > 0 ? Number(process.argv[secondsArg + 1]) : 0;
const subject = process.env.SUBJECT ?? "contoso.vision.ml.outputs.>";

const nc = await connect({
  servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
  name: "ml-watch-node",
  authenticator: tokenAuthenticator(fetchToken),
  maxReconnectAttempts: -1,
  reconnectTimeWait: 250,
});
const events = {};
(async () => {
  for await (const s of nc.status()) {
    events[s.type] = (events[s.type] ?? 0) + 1;
    console.log(JSON.stringify({ status: s.type, error: s.error?.message }));
  }
})();
const sub = nc.subscribe(subject);
(async () => {
  for await (const m of sub) console.log(JSON.stringify({ msg: m.subject, data: m.string() }));
})();
await nc.flush();
console.log(JSON.stringify({ ready: true }));
if (seconds > 0) {
  await new Promise((r) => setTimeout(r, seconds * 1000));
  await nc.flush();
  console.log(JSON.stringify({ summary: { events, tokens, closed: nc.isClosed() } }));
  await nc.close();
}
