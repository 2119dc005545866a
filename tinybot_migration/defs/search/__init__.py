"""The vector index and the bot's memory search."""
