"""The migration runner: stages that follow the asset graph, a partitioned stage as one run over
every key registered by then, in registration order (docs/design.md §8)."""

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    instance_for_test,
)

from tinybot_migration.defs.stages import build_migration_jobs, migration_stages
from tinybot_migration.runtime.runner import run_migration

toy_slugs = DynamicPartitionsDefinition(name="toy_slug")


def build_toy_project(fail_registration: bool = False):
    @asset
    def registrar(context: AssetExecutionContext) -> MaterializeResult:
        if fail_registration:
            raise RuntimeError("the relational stage failed")
        # Registered out of alphabetical order: the range must follow registration order.
        context.instance.add_dynamic_partitions(toy_slugs.name, ["bravo", "alpha", "charlie"])
        return MaterializeResult(metadata={"registered": 3})

    @asset(partitions_def=toy_slugs, backfill_policy=BackfillPolicy.single_run(), deps=[registrar])
    def per_slug(context: AssetExecutionContext) -> MaterializeResult:
        return MaterializeResult(metadata={"keys": ",".join(context.partition_keys)})

    @asset(deps=[per_slug])
    def summary(context: AssetExecutionContext) -> MaterializeResult:
        """Unpartitioned, downstream of a partitioned asset (as the vector index will be)."""
        built = context.instance.get_materialized_partitions(per_slug.key)
        return MaterializeResult(metadata={"slugs_built_before": len(built)})

    @asset
    def independent() -> MaterializeResult:
        return MaterializeResult(metadata={"ran": 1})

    # Listed out of graph order on purpose: the stages come from the graph, not from this list.
    assets = [summary, per_slug, independent, registrar]
    return Definitions(assets=assets, jobs=build_migration_jobs(assets)), assets


def test_stages_follow_the_graph_a_new_stage_each_time_the_partitioning_changes():
    _, assets = build_toy_project()
    stages = migration_stages(assets)
    assert [s.job_name for s in stages] == [
        "migration_stage_1_unpartitioned",
        "migration_stage_2_toy_slug",
        "migration_stage_3_unpartitioned",
    ]
    assert [{k.to_user_string() for k in s.asset_keys} for s in stages] == [
        {"independent", "registrar"},
        {"per_slug"},
        {"summary"},
    ]


def test_partitioned_assets_run_once_over_every_registered_key_and_downstream_runs_after():
    defs, assets = build_toy_project()
    with instance_for_test() as instance:
        report = run_migration(log_level="WARNING", defs=defs, assets=assets, instance=instance)
    assert report.ok
    assert len(report.run_ids) == 3
    assert sorted(report.assets["per_slug"].metadata["keys"].split(",")) == ["alpha", "bravo", "charlie"]
    assert report.assets["summary"].metadata["slugs_built_before"] == 3


def test_a_failed_first_run_stops_the_partitioned_run():
    defs, assets = build_toy_project(fail_registration=True)
    with instance_for_test() as instance:
        report = run_migration(log_level="CRITICAL", defs=defs, assets=assets, instance=instance)
    assert not report.ok
    assert len(report.run_ids) == 1
    assert "the relational stage failed" in report.failure
    assert "per_slug" not in report.assets and "summary" not in report.assets
