"""Embeddings: packing texts into requests, the offline hash embedder, and the cache in the new DB."""
