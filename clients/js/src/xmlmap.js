// XML events (docs/protocol.md, "XML events"): an element read as the event
// object the rules see, and an object written back as such an element. The
// same one-to-one mapping as rulebot/wire/xmlmap.py: attributes are strings,
// child elements lists, an element's text a string or its "#text" key, names
// in other namespaces in Clark notation ("{urn:x}name").

import { Element } from "@xmpp/xml";

export const TEXT_KEY = "#text";
const XML_NS = "http://www.w3.org/XML/1998/namespace";
const NAME = /^[A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd][A-Za-z_\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]*$/u;
const CLARK = /^\{([^{}]*)\}(.*)$/s;

/** The error a reader throws for an element without an object form. */
export class XmlEventError extends Error {
  constructor(code, message, path) {
    super(`${code}: ${message}`);
    this.code = code;
    this.path = path;
  }
}

/** "{namespace}local" of an element (ltx). */
export function clarkName(el) {
  return `{${el.getNS() ?? ""}}${el.getName()}`;
}

function pointer(path) {
  return path.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");
}

function attributeKey(el, name) {
  const i = name.indexOf(":");
  if (i < 0) return name;
  const prefix = name.slice(0, i);
  const ns = prefix === "xml" ? XML_NS : el.findNS(prefix);
  return `{${ns ?? ""}}${name.slice(i + 1)}`;
}

function childKey(child, rootNs) {
  const ns = child.getNS() ?? "";
  return ns === rootNs ? child.getName() : `{${ns}}${child.getName()}`;
}

function value(el, rootNs, path, root) {
  const attrs = Object.entries(el.attrs).filter(
    ([k]) => k !== "xmlns" && !k.startsWith("xmlns:"));
  const children = el.children.filter((c) => typeof c !== "string");
  const text = el.children.filter((c) => typeof c === "string").join("");
  if (!attrs.length && !children.length && !root) return text;
  const obj = {};
  for (const [name, v] of attrs) obj[attributeKey(el, name)] = String(v);
  if (!children.length) {
    if (text) obj[TEXT_KEY] = text;
    return obj;
  }
  if (text.trim()) {
    throw new XmlEventError("xml-mixed-content", "text beside child elements", pointer(path));
  }
  let last = null;
  for (const child of children) {
    const key = childKey(child, rootNs);
    const have = obj[key];
    if (typeof have === "string") {
      throw new XmlEventError("xml-name-clash", `an attribute and a child named ${key}`,
        pointer([...path, key]));
    }
    if (have !== undefined && key !== last) {
      throw new XmlEventError("xml-interleaved", `the <${key}> elements are not consecutive`,
        pointer([...path, key]));
    }
    const items = (obj[key] ??= []);
    items.push(value(child, rootNs, [...path, key, items.length], false));
    last = key;
  }
  return obj;
}

/** The event object of an XML event element (ltx Element). */
export function readEvent(el) {
  return value(el, el.getNS() ?? "", [], true);
}

function scalar(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return v;
  if (typeof v === "number" || typeof v === "boolean") return JSON.stringify(v);
  throw new Unwritable();
}

class Unwritable extends Error {}

function elementName(key) {
  const m = CLARK.exec(key);
  if (!m) {
    if (!NAME.test(key)) throw new Unwritable();
    return [key, null];
  }
  if (!NAME.test(m[2])) throw new Unwritable();
  return [m[2], m[1]];
}

function build(local, v, ns, parentNs, rootNs) {
  const el = new Element(local, ns !== parentNs ? { xmlns: ns } : {});
  if (v === null || typeof v !== "object" || Array.isArray(v)) {
    if (Array.isArray(v)) throw new Unwritable();
    const t = scalar(v);
    if (t) el.t(t);
    return el;
  }
  let text = null;
  const children = [];
  let n = 0;
  for (const [key, item] of Object.entries(v)) {
    if (key === TEXT_KEY) {
      text = scalar(item);
    } else if (item !== null && typeof item === "object") {
      children.push([key, item]);
    } else {
      const s = scalar(item);
      if (s === null) continue;
      const [name, attrNs] = elementName(key);
      if (attrNs === XML_NS) el.attrs[`xml:${name}`] = s;
      else if (attrNs) {
        const prefix = `n${n++}`;
        el.attrs[`xmlns:${prefix}`] = attrNs;
        el.attrs[`${prefix}:${name}`] = s;
      } else el.attrs[name] = s;
    }
  }
  if (text && children.length) throw new Unwritable();
  if (text) el.t(text);
  for (const [key, item] of children) {
    const [name, childNs] = elementName(key);
    for (const one of Array.isArray(item) ? item : [item]) {
      if (Array.isArray(one)) throw new Unwritable();
      el.append(build(name, one, childNs ?? rootNs, ns, rootNs));
    }
  }
  return el;
}

/** The payload as the XML event element `tag` ("{namespace}local"), or null
 * when it has no XML form (send it as JSON then). */
export function writeEvent(payload, tag) {
  const m = CLARK.exec(tag);
  if (!m) throw new TypeError(`not an XML event tag: ${tag}`);
  try {
    return build(m[2], payload, m[1], null, m[1]);
  } catch (e) {
    if (e instanceof Unwritable) return null;
    throw e;
  }
}
