"""The embedding provider as a Dagster resource: its settings (the key from the environment, never
shown) over the core's `EmbeddingClient`, one client per resource instance (a step's threads share
its event loop and its limit on requests in flight)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from tinybot_migration.lib.embeddings.batches import MAX_INPUTS_PER_REQUEST, MAX_TOKENS_PER_REQUEST
from tinybot_migration.lib.embeddings.client import (
    DEFAULT_MODEL,
    DIMENSIONS,
    EmbeddingClient,
    EmbeddingResult,
    EmbeddingSettings,
)
from tinybot_migration.lib.progress import Progress
from tinybot_migration.lib.settings import EMBEDDING_ENVIRONMENT, embedding_deadline_seconds


def provider_numbers_from_environment() -> dict:
    """The provider's numeric settings the environment sets (not secrets: plain values, not EnvVar)."""
    deadline = embedding_deadline_seconds()
    return {} if deadline is None else {"batch_deadline_seconds": deadline}


class EmbeddingProviderResource(ConfigurableResource):
    """Embeddings for memories: "openai" (any OpenAI-compatible server with `base_url`), "hash"
    (offline, deterministic), or "auto" (openai when an API key is set, else hash)."""

    provider: str = Field(default="auto", description="auto | openai | hash (env EMBEDDING_PROVIDER)")
    model: str = Field(default=DEFAULT_MODEL, description="env EMBEDDING_MODEL")
    dimensions: int = Field(default=DIMENSIONS)
    api_key: str | None = Field(default=None, description="env OPENAI_API_KEY")
    base_url: str | None = Field(default=None, description="env OPENAI_BASE_URL")
    max_inputs_per_request: int = Field(default=MAX_INPUTS_PER_REQUEST)
    max_tokens_per_request: int = Field(default=MAX_TOKENS_PER_REQUEST)
    max_concurrent_requests: int = Field(default=4)
    max_retries: int = Field(default=6, description="retries per batch after the first attempt")
    initial_backoff_seconds: float = Field(default=1.0)
    max_backoff_seconds: float = Field(default=60.0)
    request_timeout_seconds: float = Field(default=60.0, description="the longest one request may take")
    batch_deadline_seconds: float = Field(
        default=120.0,
        description="the longest one batch may take, every retry included; then the run fails, and every "
        "later call in the same process fails at once (a provider that stopped answering is waited for once)",
    )
    max_refusal_requests: int = Field(
        default=64, description="requests one embed call may spend isolating texts the provider refuses"
    )
    unit_vectors: bool = Field(
        default=True,
        description="the provider's vectors have length 1 (OpenAI's and the offline embedder's do); "
        "false for an OpenAI-compatible server whose vectors are not normalised (then only zero, NaN "
        "and infinite vectors are refused)",
    )

    _client: EmbeddingClient | None = PrivateAttr(default=None)

    @classmethod
    def environment_names(cls) -> dict[str, str]:
        return EMBEDDING_ENVIRONMENT

    def settings(self) -> EmbeddingSettings:
        return EmbeddingSettings(**{f.name: getattr(self, f.name) for f in fields(EmbeddingSettings)})

    def client(self) -> EmbeddingClient:
        if self._client is None:
            self._client = EmbeddingClient(self.settings())
        return self._client

    def effective_provider(self) -> str:
        return self.settings().effective_provider()

    def embed(self, texts: Sequence[str], log: Progress | None = None) -> EmbeddingResult:
        return self.client().embed(texts, log)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()
