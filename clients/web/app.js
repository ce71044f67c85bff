// The friends demo: three users, each a RulebotClient (clients/js) over
// WebSocket, talking to the friend bot with rules/friends. Everything shown
// comes from the bot's messages; the page decides nothing itself.

import { RequestError, RulebotClient } from "@rulebot/client";

const config = await (await fetch("/config.json")).json();
document.getElementById("bot").textContent = config.bot;
const users = Object.keys(config.users);

function jidOf(user) {
  return `${user}@${config.domain}`;
}

function userOf(jid) {
  return String(jid).split("@")[0];
}

class Panel {
  constructor(user) {
    this.user = user;
    const node = document.getElementById("user").content.firstElementChild.cloneNode(true);
    node.id = user;
    this.node = node;
    this.$ = (sel) => node.querySelector(sel);
    this.$(".name").textContent = user;
    for (const other of users.filter((u) => u !== user)) {
      const option = document.createElement("option");
      option.value = other;
      option.textContent = other;
      this.$(".peer").append(option);
    }
    this.$(".login").addEventListener("click", () => this.login());
    this.$(".logout").addEventListener("click", () => this.logout());
    this.$(".request").addEventListener("click", () => this.send(
      { type: "friend-request", to: jidOf(this.$(".peer").value) }));
    this.$(".chat").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = this.$(".text").value;
      this.$(".text").value = "";
      const to = this.$(".peer").value;
      this.log("sent", `me → ${to}: ${text}`);
      // No answer comes for a delivered chat (the rule only forwards it): an
      // error, if the rules refuse it, arrives as a message of its own.
      this.client.send({ type: "chat", to: jidOf(to), text })
        .catch((err) => this.log("error", err.message));
    });
    document.getElementById("users").append(node);
  }

  log(kind, text) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = text;
    this.$(".log").append(li);
    li.scrollIntoView({ block: "nearest" });
  }

  setStatus(online) {
    const status = this.$(".status");
    status.textContent = online ? "online" : "offline";
    status.className = `status ${online ? "online" : "offline"}`;
    for (const sel of [".logout", ".request", ".send"]) this.$(sel).disabled = !online;
    this.$(".login").disabled = online;
  }

  async login() {
    this.$(".login").disabled = true;
    this.client = new RulebotClient({
      service: config.websocket_url, domain: config.domain, username: this.user,
      password: config.users[this.user], bot: config.bot, resource: "web",
      sharePresence: true, // presence goes to the bot, which tells friends only
      saslMechanism: "PLAIN", // loopback only: the demo's server is on 127.0.0.1
    });
    this.client.on("event", (m) => this.show(m));
    this.client.on("online", () => this.setStatus(true));
    this.client.on("offline", () => this.setStatus(false));
    this.client.on("error", (e) => this.log("error", `connection: ${e.message}`));
    try {
      await this.client.start();
    } catch (e) {
      this.log("error", `login failed: ${e.message}`);
      this.$(".login").disabled = false;
    }
  }

  async logout() {
    await this.client.stop();
    this.setStatus(false);
    this.$(".friends").replaceChildren();
  }

  async send(event) {
    try {
      const answer = await this.client.request(event, { timeout: 10_000 });
      this.show(answer);
    } catch (e) {
      if (e instanceof RequestError) this.log("error", `refused (${e.code}): ${e.received.error.message}`);
      else this.log("error", e.message);
    }
  }

  friend(user, presence) {
    let li = this.$(`.friends [data-user="${user}"]`);
    if (!li) {
      li = document.createElement("li");
      li.dataset.user = user;
      this.$(".friends").append(li);
    }
    li.className = presence === "unavailable" ? "offline" : "online";
    li.textContent = `${user} ${presence === "unavailable" ? "offline" : "online"}`;
  }

  show(m) {
    const p = m.payload;
    if (m.error) {
      this.log("error", `refused (${m.error.code}): ${m.error.message}`);
      return;
    }
    const from = userOf(p.from ?? m.sender ?? "");
    switch (p.type) {
      case "chat":
        this.log("chat", `${from}: ${p.text}`);
        break;
      case "friend-request": {
        this.log("request", `${from} asks to be friends`);
        const li = document.createElement("li");
        li.dataset.from = from;
        const accept = document.createElement("button");
        accept.className = "accept";
        accept.textContent = `Accept ${from}`;
        accept.addEventListener("click", async () => {
          li.remove();
          await this.send({ type: "friend-accept", to: jidOf(from) });
        });
        li.append(accept);
        this.$(".requests").append(li);
        break;
      }
      case "friend-request-sent":
        this.log("info", `friend request sent to ${userOf(p.to)}`);
        break;
      case "friend-accepted":
        this.log("info", `${from} accepted: you are friends`);
        this.friend(from, "available");
        break;
      case "friends":
        this.log("info", `you and ${userOf(p.with)} are friends`);
        this.friend(userOf(p.with), "available");
        break;
      case "presence":
        this.friend(from, p.presence);
        break;
      default:
        this.log("info", JSON.stringify(p));
    }
  }
}

for (const user of users) new Panel(user);
document.body.dataset.ready = "true";
