"""The relational copy: each table described once, copied with deterministic ids, and checked."""
