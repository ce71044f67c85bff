"""The bot-client contract, sans-IO: event text in, payload text out."""
