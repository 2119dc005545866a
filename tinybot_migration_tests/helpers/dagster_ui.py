"""`tinybot-migration dev` started as a person starts it, and driven through its GraphQL API with the
requests the Dagster UI sends (the launch logic of the UI's Materialize button, in Python).

The UI's rules (dagster-ui `LaunchAssetExecutionButton` / `LaunchAssetChoosePartitionsDialog`):
the assets' first common job is the target; unpartitioned assets launch as one run
(`launchPipelineExecution`, every check of the job selected); a selection with partitioned assets
opens the partition dialog, whose default is every partition, and more than one partition of the
hidden asset job launches as an asset backfill (`launchPartitionBackfill` with the asset selection
and the partition names). With no partition to offer, that dialog's launch button is disabled.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVE_TIMEOUT_SECONDS = 180
HIDDEN_ASSET_JOB_PREFIX = "__ASSET_JOB"
FINISHED_RUN = ("SUCCESS", "FAILURE", "CANCELED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # fields: state, ppid, pgrp, …; a zombie has already exited
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def cli_path() -> Path:
    return Path(sys.executable).parent / "tinybot-migration"


def wait_until_serving(port: int, parent: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        assert parent.poll() is None, parent.stdout.read() if parent.stdout else parent.returncode
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster dev did not serve on port {port} within {SERVE_TIMEOUT_SECONDS}s")


def stop_group(parent: subprocess.Popen, group: int | None, grace_seconds: float = 10) -> list[int]:
    """SIGTERM to `tinybot-migration dev`, as a service manager stops it; the processes of its
    dagster dev group still alive `grace_seconds` after it exited."""
    if parent.poll() is None:
        parent.send_signal(signal.SIGTERM)
        try:
            parent.wait(timeout=60)
        except subprocess.TimeoutExpired:
            parent.kill()
            parent.wait()
    deadline = time.monotonic() + grace_seconds
    while group is not None and processes_in_group(group) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_in_group(group) if group is not None else []


class GraphQLError(AssertionError):
    pass


class DagsterUI:
    """A running `tinybot-migration dev` and the requests its UI makes."""

    def __init__(self, port: int, parent: subprocess.Popen) -> None:
        self.port = port
        self.parent = parent
        self.process_group = os.getpgid(children_of(parent.pid)[0])
        self.location, self.repository = self._repository()

    def graphql(self, query: str, **variables) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            body = json.load(answer)
        if body.get("errors"):
            raise GraphQLError(json.dumps(body["errors"], indent=1)[:4000])
        return body["data"]

    @property
    def repository_selector(self) -> dict:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def _repository(self) -> tuple[str, str]:
        data = self.graphql(REPOSITORIES_QUERY)["repositoriesOrError"]
        assert data["__typename"] == "RepositoryConnection", data
        [repository] = data["nodes"]
        return repository["location"]["name"], repository["name"]

    # What the Materialize button loads and decides ---------------------------------------------

    def asset_nodes(self, keys: list[str] | None = None) -> list[dict]:
        """The launch loader's asset nodes (every asset when `keys` is None), in graph order."""
        selection = None if keys is None else [{"path": [k]} for k in keys]
        return self.graphql(ASSET_NODES_QUERY, assetKeys=selection)["assetNodes"]

    def asset_group(self, name: str) -> list[str]:
        """The asset keys of a group, as its "Materialize all" selects them."""
        return [n["assetKey"]["path"][0] for n in self.asset_nodes() if n["groupName"] == name]

    def partition_keys(self, asset: str) -> list[str]:
        [node] = self.asset_nodes([asset])
        dimensions = node["partitionKeysByDimension"]
        return dimensions[0]["partitionKeys"] if dimensions else []

    def materialize(self, keys: list[str] | None = None) -> dict:
        """Press Materialize (Materialize all when `keys` is None) and accept the dialog's default
        (every partition): {"run_id": …} for one run, {"backfill_id": …} for a backfill."""
        nodes = self.asset_nodes(keys)
        job = common_job(nodes)
        partitioned = [n for n in nodes if n["partitionDefinition"]]
        assert job is not None, "the UI finds no job for this selection (Unable to Materialize)"
        if not partitioned:
            return {"run_id": self.launch_run(job, nodes)}
        partitions = self.partition_keys(partitioned[0]["assetKey"]["path"][0])
        # The dialog's launch button: disabled with no partition selected.
        assert partitions, "the partition dialog offers no partition: its Launch button is disabled"
        assert job.startswith(HIDDEN_ASSET_JOB_PREFIX) and len(partitions) > 1, (job, partitions)
        params = {
            "tags": [],
            "assetSelection": [n["assetKey"] for n in nodes],
            "partitionNames": partitions,
            "fromFailure": False,
        }
        result = self.graphql(LAUNCH_BACKFILL_MUTATION, backfillParams=params)["launchPartitionBackfill"]
        assert result["__typename"] == "LaunchBackfillSuccess", result
        return {"backfill_id": result["backfillId"]}

    def launch_run(self, job: str, nodes: list[dict]) -> str:
        checks = [
            {"assetKey": n["assetKey"], "name": c["name"]}
            for n in nodes
            for c in n["assetChecksOrError"].get("checks", [])
            if not c["jobNames"] or job in c["jobNames"]
        ]
        params = {
            "mode": "default",
            "executionMetadata": {"tags": []},
            "runConfigData": "{}",
            "selector": {
                **self.repository_selector,
                "pipelineName": job,
                "assetSelection": [n["assetKey"] for n in nodes],
                "assetCheckSelection": checks,
            },
        }
        result = self.graphql(LAUNCH_RUN_MUTATION, executionParams=params)["launchPipelineExecution"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    # Waiting -------------------------------------------------------------------------------------

    def wait_for_run(self, run_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.graphql(RUN_QUERY, runId=run_id)["runOrError"]
            if run["status"] in FINISHED_RUN:
                return run
            time.sleep(1)
        raise AssertionError(f"run {run_id} did not finish within {timeout:.0f}s")

    def wait_for_backfill(self, backfill_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            backfill = self.graphql(BACKFILL_QUERY, backfillId=backfill_id)["partitionBackfillOrError"]
            if backfill["status"] not in ("REQUESTED", "CANCELING"):
                return backfill
            time.sleep(2)
        raise AssertionError(f"backfill {backfill_id} did not finish within {timeout:.0f}s")

    # Checks and sensors --------------------------------------------------------------------------

    def latest_check_results(self) -> dict[str, tuple[str, str | None]]:
        """asset.check -> (status, severity) of each check's latest execution."""
        results = {}
        for node in self.asset_nodes():
            for check in node["assetChecksOrError"].get("checks", []):
                execution = check["executionForLatestMaterialization"]
                evaluation = (execution or {}).get("evaluation") or {}
                results[f"{node['assetKey']['path'][0]}.{check['name']}"] = (
                    execution["status"] if execution else "NOT_RUN",
                    evaluation.get("severity"),
                )
        return results

    def start_sensor(self, name: str) -> str:
        selector = {**self.repository_selector, "sensorName": name}
        result = self.graphql(START_SENSOR_MUTATION, sensorSelector=selector)["startSensor"]
        assert result["__typename"] == "Sensor", result
        return result["sensorState"]["status"]

    def sensor_state(self, name: str) -> dict:
        """{"status": RUNNING or STOPPED, "ticks": the latest ticks, newest first}."""
        selector = {**self.repository_selector, "sensorName": name}
        sensor = self.graphql(SENSOR_STATE_QUERY, sensorSelector=selector)["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        return sensor["sensorState"]

    def stop(self, grace_seconds: float = 10) -> list[int]:
        return stop_group(self.parent, self.process_group, grace_seconds)


def common_job(nodes: list[dict]) -> str | None:
    """The UI's `getCommonJob`: the first of the first asset's jobs that every asset is in."""
    if not nodes:
        return None
    return next((j for j in nodes[0]["jobNames"] if all(j in n["jobNames"] for n in nodes)), None)


def start_dev(home: Path, cwd: Path, env: dict[str, str]) -> DagsterUI:
    """`tinybot-migration dev` on a free loopback port, by its full path with no virtualenv on PATH."""
    port = free_port()
    env = {**env, "PATH": "/usr/bin:/bin", "TINYBOT_HOME": str(home)}
    env.pop("VIRTUAL_ENV", None)
    log = (cwd / "dev.log").open("w")
    parent = subprocess.Popen(
        [str(cli_path()), "dev", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(port, parent)
        return DagsterUI(port, parent)
    except BaseException:
        stop_group(parent, None)
        parent.kill()
        raise


REPOSITORIES_QUERY = """
query { repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name } } } } }
"""

ASSET_NODES_QUERY = """
query LaunchAssetLoaderQuery($assetKeys: [AssetKeyInput!]) {
  assetNodes(assetKeys: $assetKeys) {
    assetKey { path }
    groupName
    jobNames
    opNames
    isExecutable
    partitionDefinition { type name }
    partitionKeysByDimension { name partitionKeys }
    backfillPolicy { description }
    dependencyKeys { path }
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          jobNames
          executionForLatestMaterialization { status evaluation { severity } }
        }
      }
    }
  }
}
"""

LAUNCH_RUN_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidSubsetError { message }
  }
}
"""

LAUNCH_BACKFILL_MUTATION = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
  }
}
"""

RUN_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { runId status jobName tags { key value } assetSelection { path } }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    ... on PartitionBackfill {
      id
      status
      numPartitions
      runs(limit: 100) { runId status jobName tags { key value } assetSelection { path } }
    }
  }
}
"""

START_SENSOR_MUTATION = """
mutation StartSensor($sensorSelector: SensorSelector!) {
  startSensor(sensorSelector: $sensorSelector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

SENSOR_STATE_QUERY = """
query SensorState($sensorSelector: SensorSelector!) {
  sensorOrError(sensorSelector: $sensorSelector) {
    __typename
    ... on Sensor {
      sensorState { status ticks(limit: 20) { id status timestamp runIds skipReason error { message } } }
    }
  }
}
"""
