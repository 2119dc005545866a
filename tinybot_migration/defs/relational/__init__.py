"""The relational copy: the eleven tables old → new with deterministic ids, one asset each, proved
by blocking checks."""
