"""The memory store every memory source writes through: pairing the conversation history into
exchanges, the bulk writer, coverage, the rebuild, the vector index and the bot's memory query."""
