"""The bot's brain, sans-IO: an inbound stanza -> a decision -> outbound messages."""
