"""The slixmpp edge: the bot's connection (with rulebot.client, the only slixmpp importers)."""
