"""Long-term memories: pairing the conversation history into exchanges, the shared bulk writer,
the rebuild asset and its checks, and the sensor that keeps memories current."""
