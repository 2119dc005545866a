# The project's image: the code server, the webserver, the daemon and every run container
# (docker-compose.yml). The embedded PostgreSQL of the wheel is installed but unused here:
# DATABASE_URL and OLD_DATABASE_URL point at real servers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY tinybot_migration ./tinybot_migration
RUN pip install .

COPY docker/dagster.yaml docker/workspace.yaml ${DAGSTER_HOME}/

# A run container imports the definitions from here; the code server listens on 4000.
EXPOSE 4000 3000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "tinybot_migration.definitions"]
