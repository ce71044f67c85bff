// @rulebot/client: a user's connection to a rulebot service, built on
// @xmpp/client, in Node (20+, with a global WebSocket) and in the browser.
// What it does follows docs/protocol.md, the same semantics as the Python
// library (rulebot/client.py): events as JSON (<body/> or XEP-0335 <json/>)
// or as an XML event element, message ids set on every message, answers
// correlated by event id and sender, repeats dropped by message id, only the
// bot trusted, its subscription approved and nobody else's.

import { client as xmppClient, xml } from "@xmpp/client";
import { clarkName, readEvent, writeEvent, XmlEventError } from "./xmlmap.js";

export { readEvent, writeEvent, XmlEventError, xml };

export const JSON_NS = "urn:xmpp:json:0";
export const META_NS = "urn:rulebot:0";
const ROSTER_NS = "jabber:iq:roster";
const SEEN = 10_000; // message ids remembered for de-duplication
const QUEUE = 10_000; // events kept while offline

/** The bare JID of a JID, lower-cased for comparison. */
export function bareJid(jid) {
  return String(jid).split("/")[0].toLowerCase();
}

/** A message from the bot: a routed event, a reply, or an error. */
export class Received {
  constructor(fields) {
    Object.assign(this, fields);
    Object.freeze(this);
  }

  /** The error object of an error reply, else null. In an XML event the
   * error is a child element, read as a list of one object. */
  get error() {
    let err = this.payload.error;
    if (Array.isArray(err) && err.length === 1 && this.encoding.startsWith("{")) err = err[0];
    return err && typeof err === "object" && !Array.isArray(err) && "code" in err ? err : null;
  }
}

/** The bot answered a request with an error reply. */
export class RequestError extends Error {
  constructor(received) {
    const err = received.error ?? {};
    super(`${err.code}: ${err.message}`);
    this.name = "RequestError";
    this.code = err.code;
    this.path = err.path;
    this.received = received;
  }
}

/** No answer in time (the rules may have dropped the event: docs/protocol.md). */
export class TimeoutError extends Error {
  constructor(eventId, ms) {
    super(`no answer to event ${eventId} within ${ms} ms`);
    this.name = "TimeoutError";
    this.eventId = eventId;
  }
}

/** The bot refused this user's domain (`unsubscribed`): stop sending. */
export class RefusedError extends Error {
  constructor() {
    super("the service does not serve this account's domain (the bot sent unsubscribed)");
    this.name = "RefusedError";
  }
}

/**
 * Whether `from` is the bot: an account bot (a JID with an "@") from any
 * resource; a component (no "@") only as itself, never x@component.
 */
export function isFromBot(from, bot) {
  if (!from) return false;
  const b = String(bot).toLowerCase();
  return b.includes("@") ? bareJid(from) === bareJid(b) : String(from).toLowerCase() === b;
}

/** The Received of a message stanza from the bot, or null if it carries no event object. */
export function parseMessage(stanza, xmlTags = new Set()) {
  let payload;
  let encoding = "";
  for (const child of stanza.getChildElements()) {
    if (xmlTags.size && xmlTags.has(clarkName(child))) {
      try {
        payload = readEvent(child);
      } catch (e) {
        if (e instanceof XmlEventError) return null;
        throw e;
      }
      encoding = clarkName(child);
      break;
    }
  }
  if (!encoding) {
    const container = stanza.getChild("json", JSON_NS);
    encoding = container ? "json" : "body";
    const text = container ? container.getText() : stanza.getChildText("body");
    if (text === null || text === undefined) return null;
    try {
      payload = JSON.parse(text);
    } catch {
      return null;
    }
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) return null;
  const meta = stanza.getChild("rulebot", META_NS);
  const get = (k) => (meta ? (meta.attrs[k] ?? null) : null);
  return new Received({
    payload,
    sender: get("sender"),
    rule: get("rule"),
    version: get("version"),
    eventId: get("event"),
    stanzaId: stanza.attrs.id ?? null,
    encoding,
    inReplyTo: get("stanza"),
    from: stanza.attrs.from ?? null,
  });
}

function uuid() {
  return globalThis.crypto.randomUUID();
}

/**
 * One user's connection to the XMPP server, talking to the friend bot.
 *
 * Events: "event" (a Received not answering a pending request: routed
 * events, late answers), "online", "offline", "refused", "error",
 * "presence" ({from, type, show, status} of the bot's presence), "roster"
 * ({jid, subscription}: the bot's roster item changed).
 */
export class RulebotClient {
  constructor({ service, domain, username, password, bot, resource,
    encoding = "body", xmlTags = [], sharePresence = false, reconnect = true,
    messageType = "chat", saslMechanism = null }) {
    if (!bot) throw new TypeError("bot: the bot's JID is required");
    this.service = service;
    this.domain = domain;
    this.username = username;
    this.password = password;
    this.bot = bot;
    this.resource = resource;
    this.encoding = encoding;
    this.messageType = messageType;
    this.xmlTags = new Set(xmlTags);
    if (encoding.startsWith("{")) this.xmlTags.add(encoding);
    this.sharePresence = sharePresence;
    // null: the library's choice (SCRAM-SHA-1 when offered; its 10,000
    // WebCrypto rounds take ~3 s in Node). "PLAIN" is quick, but only for a
    // TLS (wss://) or loopback connection.
    this.saslMechanism = saslMechanism;
    this.reconnect = reconnect;
    this.online = false;
    this.refused = false;
    this.duplicates = 0; // messages from the bot dropped as already received
    this.jid = null;
    this._seen = new Map();
    this._pending = new Map(); // event id -> {resolve, reject, timer, stanzaId}
    this._incoming = [];
    this._waiters = [];
    this._queue = []; // stanzas written while offline
    this._listeners = new Map();
    this._presence = null; // the last presence set, sent again at each login
    this.xmpp = null;
  }

  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }

  off(name, fn) {
    this._listeners.get(name)?.delete(fn);
    return this;
  }

  _emit(name, value) {
    for (const fn of this._listeners.get(name) ?? []) {
      try {
        fn(value);
      } catch (e) {
        if (name !== "error") this._emit("error", e);
      }
    }
  }

  /** Connect, log in and send initial presence; resolves once online. */
  async start() {
    const chosen = this.saslMechanism;
    const x = xmppClient({
      service: this.service, domain: this.domain, resource: this.resource,
      username: this.username, password: this.password,
      ...(chosen && { credentials: async (authenticate, mechanisms) => {
        if (!mechanisms.includes(chosen)) {
          throw new Error(`the server does not offer SASL ${chosen} (it offers ${mechanisms})`);
        }
        await authenticate({ username: this.username, password: this.password }, chosen);
      } }),
    });
    this.xmpp = x;
    if (!this.reconnect) x.reconnect.stop();
    x.on("error", (err) => this._emit("error", err));
    x.on("offline", () => this._offline());
    x.on("disconnect", () => this._offline());
    x.on("stanza", (stanza) => this._stanza(stanza));
    x.on("online", (address) => this._online(address));
    // A resumed stream (XEP-0198) emits no "online": the session, its
    // presence included, goes on where it was.
    x.streamManagement?.on("resumed", () => this._resumed());
    await x.start();
    return this;
  }

  async _online(address) {
    this.jid = address.toString();
    // Presence makes the server route bare-JID messages (and offline ones) here.
    await this.xmpp.send(xml("presence", {}, ...this._presenceChildren()));
    if (this.sharePresence) {
      await this.xmpp.send(xml("presence", { to: this.bot }, ...this._presenceChildren()));
    }
    this.online = true;
    const queued = this._queue.splice(0);
    for (const stanza of queued) await this.xmpp.send(stanza);
    this._emit("online", this.jid);
  }

  async _resumed() {
    this.online = true;
    const queued = this._queue.splice(0);
    for (const stanza of queued) await this.xmpp.send(stanza);
    this._emit("online", this.jid);
  }

  _offline() {
    if (!this.online) return;
    this.online = false;
    this._emit("offline");
  }

  /** Close the session (unavailable presence is sent by the library). */
  async stop() {
    for (const [, p] of this._pending) clearTimeout(p.timer);
    this._pending.clear();
    if (this.xmpp) {
      this.xmpp.reconnect.stop();
      await this.xmpp.stop();
    }
    this.online = false;
  }

  _presenceChildren() {
    const p = this._presence ?? {};
    const out = [];
    if (p.show) out.push(xml("show", {}, p.show));
    if (p.status) out.push(xml("status", {}, p.status));
    return out;
  }

  /** Set this user's presence ({show, status}); sent to the bot too with sharePresence. */
  async setPresence({ show = null, status = null } = {}) {
    this._presence = { show, status };
    if (!this.online) return;
    await this.xmpp.send(xml("presence", {}, ...this._presenceChildren()));
    if (this.sharePresence) {
      await this.xmpp.send(xml("presence", { to: this.bot }, ...this._presenceChildren()));
    }
  }

  /** The roster item of the bot ({jid, subscription}) or null (RFC 6121 roster get). */
  async rosterItem() {
    const result = await this.xmpp.iqCaller.get(xml("query", ROSTER_NS));
    const item = result.getChildren("item").find((i) => bareJid(i.attrs.jid) === bareJid(this.bot));
    return item ? { jid: item.attrs.jid, subscription: item.attrs.subscription ?? "none" } : null;
  }

  /**
   * The subscription handshake, only when needed (docs/protocol.md,
   * Presence): asks for it when the roster has no `both` subscription with
   * the bot; returns whether it asked. The bot's request is approved when it
   * comes (and only the bot's).
   */
  async subscribe() {
    if (this.refused) throw new RefusedError();
    const item = await this.rosterItem();
    if (item && item.subscription === "both") return false;
    await this.xmpp.send(xml("presence", { to: this.bot, type: "subscribe" }));
    return true;
  }

  _stanza(stanza) {
    if (stanza.is("presence")) return this._onPresence(stanza);
    if (stanza.is("iq") && stanza.attrs.type === "set") {
      const query = stanza.getChild("query", ROSTER_NS);
      const from = stanza.attrs.from;
      // A roster push (RFC 6121 2.1.6) comes from the account itself or no one.
      if (query && (!from || bareJid(from) === bareJid(this.jid ?? ""))) {
        for (const item of query.getChildren("item")) {
          if (bareJid(item.attrs.jid) === bareJid(this.bot)) {
            this._emit("roster", { jid: item.attrs.jid,
              subscription: item.attrs.subscription ?? "none" });
          }
        }
      }
      return;
    }
    if (!stanza.is("message")) return;
    if (stanza.attrs.type === "error" || !isFromBot(stanza.attrs.from, this.bot)) return;
    const received = parseMessage(stanza, this.xmlTags);
    if (received === null) return;
    if (received.stanzaId) {
      // The bot re-sends after a restart or a resumed stream with the same ids.
      if (this._seen.has(received.stanzaId)) {
        this.duplicates += 1;
        return;
      }
      this._seen.set(received.stanzaId, true);
      if (this._seen.size > SEEN) this._seen.delete(this._seen.keys().next().value);
    }
    if (received.sender && bareJid(received.sender) === bareJid(this.jid ?? "")) {
      const key = received.eventId ?? "";
      let pending = this._pending.get(key);
      if (!pending && received.inReplyTo) {
        pending = this._pending.get(`stanza:${received.inReplyTo}`);
      }
      if (pending) {
        this._settle(pending, received);
        return;
      }
    }
    this._deliver(received);
  }

  _settle(pending, received) {
    clearTimeout(pending.timer);
    this._pending.delete(pending.eventId);
    this._pending.delete(`stanza:${pending.stanzaId}`);
    if (received.error) pending.reject(new RequestError(received));
    else pending.resolve(received);
  }

  _deliver(received) {
    const waiter = this._waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
      waiter.resolve(received);
    } else if (!this._listeners.get("event")?.size) {
      // kept for receive() only when nobody listens (bounded: oldest dropped)
      this._incoming.push(received);
      if (this._incoming.length > QUEUE) this._incoming.shift();
    }
    this._emit("event", received);
  }

  _onPresence(stanza) {
    const from = stanza.attrs.from;
    if (!isFromBot(from, this.bot)) return;
    const type = stanza.attrs.type ?? "available";
    if (type === "subscribe") {
      // Approve the bot only: nobody else may see this user through the library.
      this.xmpp.send(xml("presence", { to: bareJid(from), type: "subscribed" }));
    } else if (type === "unsubscribed") {
      this.refused = true;
      this._emit("refused", new RefusedError());
    } else {
      this._emit("presence", { from, type, show: stanza.getChildText("show"),
        status: stanza.getChildText("status") });
    }
  }

  /** The message stanza of one event, and its event id ("id" added when missing). */
  _message(event, encoding) {
    const payload = "id" in event ? event : { ...event, id: uuid() };
    const stanzaId = uuid(); // unique: the bot derives its message ids from it
    const message = xml("message", { to: this.bot, type: this.messageType, id: stanzaId });
    const enc = encoding ?? this.encoding;
    if (enc.startsWith("{")) {
      const element = writeEvent(payload, enc);
      if (element === null) throw new TypeError(`this event has no XML form (${enc})`);
      message.append(element);
    } else if (enc === "json") {
      message.append(xml("json", { xmlns: JSON_NS }, JSON.stringify(payload)));
    } else {
      message.append(xml("body", {}, JSON.stringify(payload)));
    }
    return { message, eventId: String(payload.id), stanzaId };
  }

  async _write(message) {
    if (this.online) {
      await this.xmpp.send(message);
    } else if (this._queue.length < QUEUE) {
      this._queue.push(message); // sent at the next session
    } else {
      throw new Error(`offline with ${QUEUE} events waiting: this one was not queued`);
    }
  }

  /** Send one event to the bot; resolves to its event id. */
  async send(event, { encoding } = {}) {
    if (this.refused) throw new RefusedError();
    const { message, eventId } = this._message(event, encoding);
    await this._write(message);
    return eventId;
  }

  /**
   * Send an event and wait for the bot's answer to it: resolves to the
   * Received, rejects with RequestError (an error reply) or TimeoutError.
   * An answer after the timeout reaches the "event" listeners and receive().
   */
  request(event, { timeout = 10_000, encoding } = {}) {
    if (this.refused) return Promise.reject(new RefusedError());
    const { message, eventId, stanzaId } = this._message(event, encoding);
    return new Promise((resolve, reject) => {
      const pending = { resolve, reject, eventId, stanzaId, timer: null };
      pending.timer = setTimeout(() => {
        this._pending.delete(eventId);
        this._pending.delete(`stanza:${stanzaId}`);
        reject(new TimeoutError(eventId, timeout));
      }, timeout);
      this._pending.set(eventId, pending);
      this._pending.set(`stanza:${stanzaId}`, pending);
      this._write(message).catch((e) => {
        clearTimeout(pending.timer);
        this._pending.delete(eventId);
        this._pending.delete(`stanza:${stanzaId}`);
        reject(e);
      });
    });
  }

  /** The next message from the bot that answered no pending request. */
  receive({ timeout = null } = {}) {
    if (this._incoming.length) return Promise.resolve(this._incoming.shift());
    return new Promise((resolve, reject) => {
      const waiter = { resolve, timer: null };
      if (timeout !== null) {
        waiter.timer = setTimeout(() => {
          this._waiters.splice(this._waiters.indexOf(waiter), 1);
          reject(new TimeoutError("(receive)", timeout));
        }, timeout);
      }
      this._waiters.push(waiter);
    });
  }
}
