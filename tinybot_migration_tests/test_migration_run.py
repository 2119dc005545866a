"""The migration runner: unpartitioned assets first, then each partitioned family as one run over
every key registered by then, in registration order (DESIGN §8)."""

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    asset,
    instance_for_test,
)

from tinybot_migration.jobs import build_migration_jobs
from tinybot_migration.migration_run import run_migration

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

    assets = [registrar, per_slug]
    return Definitions(assets=assets, jobs=build_migration_jobs(assets)), assets


def test_partitioned_assets_run_once_over_every_registered_key():
    defs, assets = build_toy_project()
    with instance_for_test() as instance:
        report = run_migration(log_level="WARNING", defs=defs, assets=assets, instance=instance)
    assert report.ok
    assert len(report.run_ids) == 2
    assert sorted(report.assets["per_slug"].metadata["keys"].split(",")) == ["alpha", "bravo", "charlie"]


def test_a_failed_first_run_stops_the_partitioned_run():
    defs, assets = build_toy_project(fail_registration=True)
    with instance_for_test() as instance:
        report = run_migration(log_level="CRITICAL", defs=defs, assets=assets, instance=instance)
    assert not report.ok
    assert len(report.run_ids) == 1
    assert "the relational stage failed" in report.failure
    assert "per_slug" not in report.assets
