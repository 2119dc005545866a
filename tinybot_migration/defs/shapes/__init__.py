"""shapes.inc: the legacy memories exported from the bot's predecessor, imported into `memories`."""
