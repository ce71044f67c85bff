// Compiled by `npm run types` (tsc --noEmit): the declarations in
// src/index.d.ts describe the API as the tests and the demo use it.
import { RequestError, RulebotClient, type Received, writeEvent } from "../../src/index.js";

async function use(): Promise<string> {
  const c = new RulebotClient({ service: "ws://127.0.0.1:5280/xmpp-websocket", domain: "localhost",
    username: "alice", password: "pw", bot: "friend@localhost", encoding: "{urn:x}event" });
  await c.start();
  c.on("event", (r: Received) => r.payload);
  c.on("presence", (p) => p.show);
  const id: string = await c.send({ type: "chat", to: "bob@localhost", text: "hi" });
  try {
    const r = await c.request({ type: "ping" }, { timeout: 5000 });
    return r.eventId ?? id;
  } catch (e) {
    if (e instanceof RequestError) return e.code;
    throw e;
  } finally {
    writeEvent({ a: "b" }, "{urn:x}event")?.toString();
    await c.stop();
  }
}
void use;
