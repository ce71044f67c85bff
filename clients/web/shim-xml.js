// "@xmpp/xml" for the browser: the element class of the same bundle.
export const Element = globalThis.XMPP.xml.Element;
export const xml = globalThis.XMPP.xml;
export default xml;
