# papers-digest: `digest serve` (scheduler + feeds + subscriptions) on one SQLite file in /data.
# Build stage: a venv with the project installed. Runtime stage: Debian's python3 and that venv.
FROM debian:bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 python3-venv=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY digest ./digest
# The email and page templates: package data of the wheel, from the top-level folder.
COPY templates ./templates
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/venv/bin/pip uninstall -y -q pip setuptools || true

FROM debian:bookworm-slim
LABEL org.opencontainers.image.title="papers-digest" \
      org.opencontainers.image.description="Hugging Face Daily Papers as RSS/Atom/JSON feeds and a daily email filtered by topic" \
      org.opencontainers.image.source="https://github.com/papers-digest/papers-digest" \
      org.opencontainers.image.licenses="MIT"
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3=3.11.2-1+b1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 digest \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin digest \
 && mkdir -p /data /config \
 && chown digest:digest /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DIGEST_DB=/data/papers-digest.db \
    DIGEST_FEEDS_DIR=/data/feeds
WORKDIR /data
VOLUME /data
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=60s --timeout=10s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=8).status == 200 else 1)"]
CMD ["digest", "serve", "--host", "0.0.0.0", "--port", "8000"]
