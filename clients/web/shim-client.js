// The browser build of @xmpp/client (dist/xmpp.min.js, loaded first as a
// classic script) as the ES module the package imports: an import map in
// index.html points "@xmpp/client" here.
const X = globalThis.XMPP;
export const client = X.client;
export const xml = X.xml;
export const jid = X.jid;
export default X;
