"""The embedding provider as a Dagster resource: its settings (the key from the environment, never
shown) over the core's `EmbeddingClient`, one client per resource instance (a step's threads share
its event loop and its limit on requests in flight)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from tinybot_migration.lib.embeddings.client import (
    EmbeddingClient,
    EmbeddingResult,
    EmbeddingSettings,
)
from tinybot_migration.lib.progress import Progress

# The settings' defaults, said once (the dataclass's): the resource only makes them configurable.
_DEFAULTS = EmbeddingSettings()


class EmbeddingProviderResource(ConfigurableResource):
    """Embeddings for memories: "openai" (any OpenAI-compatible server with `base_url`), "hash"
    (offline, deterministic), or "auto" (openai when an API key is set, else hash)."""

    provider: str = Field(
        default=_DEFAULTS.provider, description="auto | openai | hash (env EMBEDDING_PROVIDER)"
    )
    model: str = Field(default=_DEFAULTS.model, description="env EMBEDDING_MODEL")
    dimensions: int = Field(default=_DEFAULTS.dimensions)
    api_key: str | None = Field(default=_DEFAULTS.api_key, description="env OPENAI_API_KEY")
    base_url: str | None = Field(default=_DEFAULTS.base_url, description="env OPENAI_BASE_URL")
    max_inputs_per_request: int = Field(default=_DEFAULTS.max_inputs_per_request)
    max_tokens_per_request: int = Field(default=_DEFAULTS.max_tokens_per_request)
    max_concurrent_requests: int = Field(default=_DEFAULTS.max_concurrent_requests)
    max_retries: int = Field(
        default=_DEFAULTS.max_retries, description="retries per batch after the first attempt"
    )
    initial_backoff_seconds: float = Field(default=_DEFAULTS.initial_backoff_seconds)
    max_backoff_seconds: float = Field(default=_DEFAULTS.max_backoff_seconds)
    request_timeout_seconds: float = Field(
        default=_DEFAULTS.request_timeout_seconds, description="the longest one request may take"
    )
    batch_deadline_seconds: float = Field(
        default=_DEFAULTS.batch_deadline_seconds,
        description="the longest one batch may take, every retry included; then the run fails, and every "
        "later call in the same process fails at once (a provider that stopped answering is waited for once)",
    )
    max_refusal_requests: int = Field(
        default=_DEFAULTS.max_refusal_requests,
        description="requests one embed call may spend isolating texts the provider refuses",
    )
    unit_vectors: bool = Field(
        default=_DEFAULTS.unit_vectors,
        description="the provider's vectors have length 1 (OpenAI's and the offline embedder's do); "
        "false for an OpenAI-compatible server whose vectors are not normalised (then only zero, NaN "
        "and infinite vectors are refused)",
    )

    _client: EmbeddingClient | None = PrivateAttr(default=None)

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
