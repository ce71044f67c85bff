// Types of @rulebot/client (src/index.js).

/** An XML element as @xmpp/xml (ltx) builds it. */
export interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: Array<XmlElement | string>;
  toString(): string;
}

export type JSON = null | boolean | number | string | JSON[] | { [key: string]: JSON };
export type EventObject = { [key: string]: JSON };
/** "body", "json" or an XML event element's tag, "{namespace}local". */
export type Encoding = "body" | "json" | `{${string}}${string}`;

export const JSON_NS: "urn:xmpp:json:0";
export const META_NS: "urn:rulebot:0";

export interface ErrorObject {
  code: string;
  message: string;
  path?: string;
  id?: string | number;
}

/** A message from the bot: a routed event, a reply, or an error. */
export class Received {
  readonly payload: EventObject;
  /** The bare JID of the user whose event caused this message. */
  readonly sender: string | null;
  readonly rule: string | null;
  readonly version: string | null;
  /** The id of the event this message answers or routes. */
  readonly eventId: string | null;
  /** This message's id (rb-...). */
  readonly stanzaId: string | null;
  readonly encoding: Encoding;
  /** The id of the message stanza that carried the causing event. */
  readonly inReplyTo: string | null;
  readonly from: string | null;
  /** The error object of an error reply, else null. */
  readonly error: ErrorObject | null;
}

export class RequestError extends Error {
  readonly code: string;
  readonly path: string | undefined;
  readonly received: Received;
}

export class TimeoutError extends Error {
  readonly eventId: string;
}

export class RefusedError extends Error {}

export class XmlEventError extends Error {
  readonly code: string;
  readonly path: string;
}

export interface ClientOptions {
  /** The server's WebSocket URL (ws://, wss://) or, in Node, xmpp:// / xmpps://. */
  service: string;
  domain: string;
  username: string;
  password: string;
  /** The bot's JID: an account (friend@example.com) or a component (friend.example.com). */
  bot: string;
  resource?: string;
  /** How events are sent (default "body"). */
  encoding?: Encoding;
  /** XML event elements read from the bot's messages, besides `encoding`'s. */
  xmlTags?: string[];
  /** Send this user's presence to the bot (directed presence) at login and on change. */
  sharePresence?: boolean;
  /** Reconnect after a dropped connection (default true). */
  reconnect?: boolean;
  messageType?: "chat" | "normal" | "headline";
  /** A SASL mechanism to use ("PLAIN": only over TLS or loopback). */
  saslMechanism?: string | null;
}

export interface PresenceInfo {
  from: string;
  type: string;
  show: string | null;
  status: string | null;
}

export interface RosterItem {
  jid: string;
  subscription: "none" | "to" | "from" | "both" | "remove";
}

export interface ClientEvents {
  event: Received;
  online: string;
  offline: undefined;
  refused: RefusedError;
  error: Error;
  presence: PresenceInfo;
  roster: RosterItem;
}

export class RulebotClient {
  constructor(options: ClientOptions);
  readonly online: boolean;
  readonly refused: boolean;
  readonly duplicates: number;
  /** This session's full JID, once online. */
  readonly jid: string | null;
  readonly xmlTags: Set<string>;
  on<K extends keyof ClientEvents>(name: K, fn: (value: ClientEvents[K]) => void): this;
  off<K extends keyof ClientEvents>(name: K, fn: (value: ClientEvents[K]) => void): this;
  start(): Promise<this>;
  stop(): Promise<void>;
  /** Send one event; resolves to its event id (an "id" is added when missing). */
  send(event: EventObject, options?: { encoding?: Encoding }): Promise<string>;
  /** Send an event and wait for its answer (RequestError on an error reply). */
  request(event: EventObject, options?: { timeout?: number; encoding?: Encoding }): Promise<Received>;
  /** The next message from the bot that answered no pending request. */
  receive(options?: { timeout?: number | null }): Promise<Received>;
  setPresence(presence?: { show?: string | null; status?: string | null }): Promise<void>;
  rosterItem(): Promise<RosterItem | null>;
  /** The subscription handshake when the roster has no `both`; whether it asked. */
  subscribe(): Promise<boolean>;
}

export function bareJid(jid: string): string;
export function isFromBot(from: string | null | undefined, bot: string): boolean;
export function parseMessage(stanza: XmlElement, xmlTags?: Set<string>): Received | null;
export function readEvent(element: XmlElement): EventObject;
export function writeEvent(payload: EventObject, tag: string): XmlElement | null;
/** @xmpp/client's element builder. */
export function xml(name: string, attrs?: Record<string, string> | null,
  ...children: Array<XmlElement | string>): XmlElement;
