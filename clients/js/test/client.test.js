// The JavaScript client against a real server and the real bot: run by
// tests/integration/test_js_client.py, which starts a private Prosody (with
// its WebSocket endpoint) and `rulebot run` with the shipped rules, and
// passes where they are in RULEBOT_JS_TEST (a JSON file). Every wait is for
// an event, bounded by the test runner's timeout.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";

import { RequestError, RulebotClient, TimeoutError, readEvent, writeEvent } from "../src/index.js";

const env = JSON.parse(readFileSync(process.env.RULEBOT_JS_TEST, "utf8"));
const XML_TAG = "{urn:rulebot:example}event"; // declared in rules/00-vocabulary.yaml
const clients = [];
// Event ids unique to this run: the bot answers a repeated id from its record.
const run = globalThis.crypto.randomUUID().slice(0, 8);

// PLAIN (loopback only) but for alice, who logs in with the library's
// default (SCRAM-SHA-1, ~3 s of WebCrypto rounds).
async function connect(user, options = {}) {
  const c = new RulebotClient({ service: env.websocket_url, domain: env.domain,
    username: user, password: env.passwords[user], bot: env.bot,
    saslMechanism: user === "alice" ? null : "PLAIN", ...options });
  await c.start();
  clients.push(c);
  return c;
}

/** The next message `client` gets that satisfies `predicate` (others, such as
 * the presence broadcasts of users logging in, are passed over). */
async function next(client, predicate = () => true) {
  for (;;) {
    const r = await client.receive({ timeout: 10_000 });
    if (predicate(r)) return r;
  }
}

function once(client, name, predicate = () => true) {
  return new Promise((resolve) => {
    const fn = (value) => {
      if (predicate(value)) {
        client.off(name, fn);
        resolve(value);
      }
    };
    client.on(name, fn);
  });
}

let alice;
let bob;

before(async () => {
  alice = await connect("alice");
  bob = await connect("bob");
});

after(async () => {
  for (const c of clients) await c.stop();
});

describe("events, answers and routing", () => {
  test("a request gets its reply, correlated by event id and sender", async () => {
    const pong = await alice.request({ type: "ping", id: `p1-${run}` });
    assert.deepEqual(pong.payload, { type: "pong", id: `p1-${run}` });
    assert.equal(pong.eventId, `p1-${run}`);
    assert.equal(pong.sender, "alice@localhost");
    assert.equal(pong.rule, "ping");
    assert.match(pong.version, /^[0-9a-f]{12}$/);
    assert.match(pong.stanzaId, /^rb-[0-9a-f]{20}$/);
  });

  test("a chat is routed to its addressee with the metadata, in the sender's encoding", async () => {
    const id = await alice.send({ type: "chat", to: "bob@localhost", text: "h\u00e9llo <b> & \"q\" \u{1f600}" }, { encoding: "json" });
    const routed = await next(bob, (r) => r.eventId === id);
    assert.equal(routed.encoding, "json");
    assert.deepEqual(routed.payload, { type: "chat", id, from: "alice@localhost",
      text: "h\u00e9llo <b> & \"q\" \u{1f600}" });
    assert.equal(routed.sender, "alice@localhost");
    assert.equal(routed.rule, "chat-to-member");
    assert.equal(routed.eventId, id);
  });

  test("an error reply rejects the request with its code and path", async () => {
    await assert.rejects(alice.request({ type: "chat", to: "mallory@localhost", text: "x" }),
      (e) => e instanceof RequestError && e.code === "not-a-member");
    await assert.rejects(alice.request({ type: "chat", to: "bob@localhost", text: 5 }),
      (e) => e instanceof RequestError && e.code === "invalid-event" && e.path === "/text");
  });

  test("a late answer reaches receive() after the request timed out", async () => {
    await assert.rejects(alice.request({ type: "ping", id: `late-${run}` }, { timeout: 1 }),
      (e) => e instanceof TimeoutError && e.eventId === `late-${run}`);
    const late = await next(alice, (r) => r.payload.type !== "presence");
    assert.equal(late.eventId, `late-${run}`);
    assert.equal(late.payload.type, "pong");
  });

  test("a message delivered twice is handed over once (de-duplication by message id)", async () => {
    const before = bob.duplicates;
    const { message, eventId } = alice._message({ type: "chat", to: "bob@localhost", text: "twice" });
    await alice.xmpp.send(message);
    await alice.xmpp.send(message); // the same stanza again: the bot answers it again, same ids
    const first = await next(bob, (r) => r.payload.type !== "presence");
    assert.equal(first.eventId, eventId);
    // a later event arrives after the repeat: by then the repeat was dropped
    const marker = await alice.send({ type: "chat", to: "bob@localhost", text: "after" });
    const later = await next(bob, (r) => r.payload.type !== "presence");
    assert.equal(later.eventId, marker);
    assert.equal(bob.duplicates, before + 1);
  });

  test("XML events go out as the element and come back as the event object", async () => {
    const carol = await connect("carol", { encoding: XML_TAG });
    bob.xmlTags.add(XML_TAG);
    const id = await carol.send({ type: "chat", to: "bob@localhost", text: "in <xml> & \u00e9" });
    const routed = await next(bob, (r) => r.eventId === id);
    assert.equal(routed.encoding, XML_TAG);
    assert.deepEqual(routed.payload, { type: "chat", id, from: "carol@localhost",
      text: "in <xml> & \u00e9" });
    await assert.rejects(carol.request({ type: "chat", to: "bob@localhost" }),
      (e) => e instanceof RequestError && e.code === "invalid-event");
  });
});

describe("the mapping in JavaScript matches docs/protocol.md", () => {
  test("attributes, repeated children, text and namespaces", () => {
    const event = { type: "order", id: "o1", item: [{ sku: "A1" }, { sku: "B7", "#text": "gift" }],
      note: ["fragile"], "{urn:sig}sig": ["abc"], empty: [""] };
    const el = writeEvent(event, "{urn:example:shop}event");
    assert.equal(el.toString(), "<event xmlns=\"urn:example:shop\" type=\"order\" id=\"o1\">"
      + "<item sku=\"A1\"/><item sku=\"B7\">gift</item><note>fragile</note>"
      + "<sig xmlns=\"urn:sig\">abc</sig><empty/></event>");
    assert.deepEqual(readEvent(el), event);
    assert.equal(writeEvent({ "not a name": "x" }, "{urn:example:shop}event"), null);
  });
});

describe("presence, subscription and reconnection", () => {
  test("directed presence is an event the rules broadcast to the other members", async () => {
    const seen = once(alice, "event", (r) => r.payload.type === "presence"
      && r.payload.from === "admin@localhost");
    const admin = await connect("admin", { sharePresence: true });
    const presence = await seen;
    assert.equal(presence.payload.presence, "available");
    await admin.stop();
  });

  test("the subscription handshake runs once: asked when the roster has no `both`", async () => {
    const both = once(alice, "roster", (item) => item.subscription === "both");
    assert.equal(await alice.subscribe(), true);
    await both; // the bot approved and asked back; the client approved only the bot
    assert.deepEqual((await alice.rosterItem()).subscription, "both");
    assert.equal(await alice.subscribe(), false);
  });

  test("after a dropped connection it reconnects, and what was sent meanwhile goes then", async () => {
    const offline = once(bob, "offline");
    const online = once(bob, "online");
    bob.xmpp.socket.socket.close(); // the network goes away under the library
    await offline;
    const id = await bob.send({ type: "ping" }); // queued while offline
    await online;
    const pong = await next(bob, (r) => r.payload.type !== "presence");
    assert.equal(pong.eventId, id);
    assert.equal((await bob.request({ type: "ping" })).payload.type, "pong");
  });
});
