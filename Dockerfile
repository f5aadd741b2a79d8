# One image for every runstream service; compose.yaml picks the part with `command`
# (runstream migrate | processor | gateway | api | serve).

# The web UI is built in a Node stage; only its static output reaches the final image.
FROM node:20-slim AS ui
WORKDIR /ui
COPY ui/package.json ui/package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY ui ./
RUN npm run build

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, read from pyproject.toml alone, so editing code does not
# reinstall them (this layer stays cached until pyproject.toml changes).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['server']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The folders of [tool.setuptools.package-dir] (tests/test_compose.py checks that this
# list keeps up with pyproject.toml), installed with the server extra. Package data
# (migrations, JSON Schema) lives inside them; the dev-only runstream/devstack is not
# installed.
COPY runstream ./runstream
COPY ingest ./ingest
COPY processors ./processors
COPY query_api ./query_api
COPY schemas ./schemas
RUN pip install --no-cache-dir ".[server]" && rm -rf build *.egg-info

# Unprivileged user. The blob directory is created here, owned by that user, because an
# empty named volume mounted over it copies the directory's ownership on first use.
RUN useradd --create-home --uid 10001 --user-group runstream \
    && mkdir -p /var/lib/runstream/blobs \
    && chown -R runstream:runstream /var/lib/runstream
USER runstream
WORKDIR /home/runstream
ENV RUNSTREAM_BLOB_DIR=/var/lib/runstream/blobs \
    RUNSTREAM_UI_DIR=/opt/runstream/ui
COPY --from=ui /ui/dist /opt/runstream/ui

# 8080: query API, 8081: ingest gateway, 9464: a processor's /metrics
# (RUNSTREAM_API_PORT / RUNSTREAM_GATEWAY_PORT / RUNSTREAM_METRICS_PORT).
EXPOSE 8080 8081 9464

ENTRYPOINT []
CMD ["runstream", "--help"]
