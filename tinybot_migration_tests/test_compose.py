"""The production compose setup, checked without a Docker engine: docker-compose.yml, the
Dockerfile, the instance and workspace files they install, and .env.example, parsed and held
against each other and against the code (the variables it reads, its module, its pools)."""

import re
import tomllib
from pathlib import Path

import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster_docker import DockerRunLauncher

from tinybot_migration.lib.settings import ENVIRONMENT, LOCAL_ONLY

ROOT = Path(__file__).resolve().parent.parent
SERVICES = {"postgres", "tinybot_code", "dagster_webserver", "dagster_daemon"}
PIPELINE_SERVICES = SERVICES - {"postgres"}
# A literal variable name read anywhere in the package: every one must be in the settings' registry.
READ_PATTERNS = (
    r'EnvVar\("([A-Z_]+)"\)',
    r'os\.environ\.get\("([A-Z_]+)"',
    r'os\.environ\["([A-Z_]+)"\]',
    r'os\.environ\.pop\("([A-Z_]+)"',
    r'getenv\("([A-Z_]+)"',
)


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def instance_yaml() -> dict:
    return yaml.safe_load((ROOT / "docker" / "dagster.yaml").read_text())


def variables_the_code_reads() -> set[str]:
    """What the containers must set: every setting the project reads (lib/settings.py), but those
    only the CLI and the embedded server read."""
    return set(ENVIRONMENT) - LOCAL_ONLY


def test_the_code_reads_no_variable_the_settings_do_not_name():
    literal = set()
    for path in (ROOT / "tinybot_migration").rglob("*.py"):
        for pattern in READ_PATTERNS:
            literal |= set(re.findall(pattern, path.read_text(), re.MULTILINE))
    assert literal - set(ENVIRONMENT) == set()


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name] = value
    return pairs


def test_the_services_their_images_ports_and_health_checks():
    services = compose()["services"]
    assert set(services) == SERVICES
    assert all("healthcheck" in s and s["healthcheck"]["test"] for s in services.values())
    image, _, tag = services["postgres"]["image"].partition(":")
    assert image == "pgvector/pgvector"
    assert tuple(int(x) for x in tag.split("-")[0].split(".")) >= (0, 8, 4), tag  # docs/design.md §8
    assert (
        "5432:5432" in services["postgres"]["ports"] and "3000:3000" in services["dagster_webserver"]["ports"]
    )
    assert services["tinybot_code"]["build"] == "." and (ROOT / "Dockerfile").exists()
    built = services["tinybot_code"]["image"]
    assert services["dagster_webserver"]["image"] == services["dagster_daemon"]["image"] == built
    assert services["tinybot_code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == built  # runs use it
    for name in ("dagster_webserver", "dagster_daemon"):
        assert services[name]["depends_on"]["tinybot_code"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]


def test_postgres_holds_the_new_database_and_dagsters_own_storage():
    postgres = compose()["services"]["postgres"]
    assert "postgres-data:/var/lib/postgresql" in postgres["volumes"]  # PostgreSQL 18's layout
    [init] = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    script = ROOT / init.split(":")[0]
    assert "CREATE DATABASE dagster" in script.read_text()
    environment = compose()["services"]["tinybot_code"]["environment"]
    assert environment["DAGSTER_PG_DB"] == "dagster"
    assert environment["DATABASE_URL"].endswith(f"@postgres:5432/{postgres['environment']['POSTGRES_DB']}")


def test_every_variable_the_code_reads_reaches_the_services_and_every_run_container():
    wanted = variables_the_code_reads()
    assert {"DATABASE_URL", "OLD_DATABASE_URL", "OPENAI_API_KEY", "SHAPES_EXPORT_DIR"} <= wanted
    services = compose()["services"]
    for name in PIPELINE_SERVICES:
        assert wanted <= set(services[name]["environment"]), name
    launched = set(instance_yaml()["run_launcher"]["config"]["env_vars"])
    storage = {
        v["env"]
        for v in instance_yaml()["storage"]["postgres"]["postgres_db"].values()
        if isinstance(v, dict)
    }
    assert wanted | storage <= launched  # a run container reads the instance's storage too
    assert storage <= set(services["dagster_daemon"]["environment"])


def test_secrets_come_from_the_env_file_and_every_reference_is_declared_there():
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z_]+)", text))
    example = env_example()
    assert referenced <= set(example), referenced - set(example)
    assert example["POSTGRES_PASSWORD"] == "" and example["OPENAI_API_KEY"] == ""
    assert ".env" in (ROOT / ".gitignore").read_text().split() and not (ROOT / ".env").exists()
    assert "sk-" not in text and "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}" in text


def test_the_instance_file_is_valid_and_agrees_with_compose_and_the_local_instance(monkeypatch, tmp_path):
    (tmp_path / "dagster.yaml").write_text((ROOT / "docker" / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own schema check
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    assert process_config(resolve_to_config_type(DockerRunLauncher.config_type()), launcher["config"]).success
    stack = compose()
    assert launcher["config"]["network"] == stack["networks"]["tinybot"]["name"]
    [mount] = launcher["config"]["container_kwargs"]["volumes"]
    assert mount.split(":")[0] == stack["volumes"]["shapes-export"]["name"]
    assert mount.split(":")[1] == "/data/shapes_export"
    assert "shapes-export:/data/shapes_export:ro" in stack["services"]["tinybot_code"]["volumes"]
    local = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert (
        config["concurrency"] == local["concurrency"] and config["run_monitoring"] == local["run_monitoring"]
    )


def test_the_workspace_and_the_dockerfile_point_at_the_code_server():
    workspace = yaml.safe_load((ROOT / "docker" / "workspace.yaml").read_text())
    [server] = [entry["grpc_server"] for entry in workspace["load_from"]]
    code = compose()["services"]["tinybot_code"]
    assert server["host"] == "tinybot_code"
    command = code["command"]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-p") + 1] == str(server["port"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert command[command.index("-m") + 1] == project["tool"]["dg"]["project"]["code_location_target_module"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-9]", dockerfile, re.MULTILINE)
    assert "RUN pip install ." in dockerfile and f"EXPOSE {server['port']}" in dockerfile
    home = code["environment"]["DAGSTER_HOME"]
    assert f"DAGSTER_HOME={home}" in dockerfile
    assert "COPY docker/dagster.yaml docker/workspace.yaml ${DAGSTER_HOME}/" in dockerfile
    for name in ("dagster_webserver", "dagster_daemon"):
        assert f"{home}/workspace.yaml" in compose()["services"][name]["command"]
    assert any(d.startswith("dagster-docker==") for d in project["project"]["dependencies"])
