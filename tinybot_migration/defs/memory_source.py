"""What the asset of every memory source (the rebuild, shapes.inc, and the ones to come) shares."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from dagster import BackfillPolicy, Failure

from tinybot_migration.defs.partitions import personality_partitions
from tinybot_migration.defs.pools import EMBEDDING_POOL
from tinybot_migration.lib.embeddings.client import EmbeddingProviderError
from tinybot_migration.lib.personalities import UnknownPersonalityError

T = TypeVar("T")

# What every memory source's asset shares: partitioned by personality, one run over any number of
# keys, the provider's pool. `can_subset` makes its checks optional outputs.
MEMORY_ASSET_OPTIONS = dict(
    can_subset=True,
    partitions_def=personality_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    pool=EMBEDDING_POOL,
    # No RetryPolicy: the provider retries each request itself within its deadline, and Dagster
    # would turn Ctrl-C or SIGTERM inside the step into a retry that keeps paying.
)


def failing_clearly(work: Callable[[], T], *also: type[Exception]) -> T:
    """Run `work`; a known error (a stale partition, the provider's final answer, or one of `also`)
    fails the step with its message alone. Chunks written stay, and what was paid is cached."""
    try:
        return work()
    except (UnknownPersonalityError, EmbeddingProviderError, *also) as error:
        resumes = (
            " (a re-run resumes: what was embedded is cached)" if getattr(error, "retryable", False) else ""
        )
        raise Failure(f"{error}{resumes}", allow_retries=False) from None
