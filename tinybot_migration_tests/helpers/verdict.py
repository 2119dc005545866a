"""The CLI summary's verdict, read the way a person reads it."""

import re

# The search's p95 measures the machine as much as the plan (a busy CI box can push it over the
# bound); speed is proven in benchmarks/, so a test of the verdict tolerates this one warning.
LATENCY_WARNING = "memory_vector_index.search_latency_within_bound"
MIGRATION_CHECKS = 61  # every check of every asset of a whole migration
SENDERS_WARNING = "shapes_memories.senders_mapped_to_personas"  # the demo export's planted unmapped senders
VECTORS_WARNING = "qdrant_vectors.qdrant_vector_classes_agree"  # the demo store's planted renamed class
DEMO_WARNINGS = (SENDERS_WARNING, VECTORS_WARNING)  # what the CLI's demo data warns about, on purpose
# With an OpenAI-compatible provider the demo store's vectors (declared hash-1536) are not compared.
PROVIDER_DEMO_WARNINGS = (SENDERS_WARNING,)


def assert_all_checks_passed(stdout: str, total: int, warnings: tuple[str, ...] = ()) -> None:
    """The verdict says every check passed out of `total`, the checks in `warnings` (and at most
    the latency one) warned, and nothing else did."""
    warned = set(re.findall(r"^WARN (\S+?):", stdout, re.MULTILINE))
    assert set(warnings) <= warned, warned
    assert warned - set(warnings) <= {LATENCY_WARNING}, warned
    suffix = f" checks ({len(warned)} warning(s))" if warned else " checks,"
    assert f"all checks passed: {total - len(warned)}/{total}{suffix}" in stdout, stdout[-2000:]
