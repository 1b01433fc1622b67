# onevoice service image (used by compose.yaml). Dependencies come from the pinned uv.lock.
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy PYTHONUNBUFFERED=1
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY services ./services
COPY schemas ./schemas
COPY consumers ./consumers
RUN uv sync --frozen --no-dev
# Never run as root: a user of its own, owning nothing but its working directory for a SQLite store.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin onevoice \
    && mkdir -p /app/data && chown onevoice /app/data
USER onevoice
ENV PATH="/app/.venv/bin:$PATH" ONEVOICE_METRICS_HOST=0.0.0.0 ONEVOICE_LOG_FORMAT=json
# 9464: /metrics, /healthz, /readyz of `onevoice run` (with ONEVOICE_METRICS_PORT=9464); 8080: `onevoice web`.
# The same image runs run, web and notify, so each compose service declares its own healthcheck.
EXPOSE 9464 8080
CMD ["onevoice", "run"]
