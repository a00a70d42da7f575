# The image compose.yaml runs: API, worker, beat and Flower, from one install.
FROM python:3.11-slim
# Not root. The processes write only under /tmp (the metrics directory of `m2m serve --workers N`,
# beat's schedule file), which every user may write to.
RUN useradd --system --uid 10001 --no-create-home m2m
WORKDIR /app
# The exact dependencies, checked against their hashes (README: Docker Compose says how to
# refresh requirements.lock); this layer is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY api ./api
COPY domain ./domain
COPY workers ./workers
RUN pip install --no-cache-dir --no-deps .
USER m2m
EXPOSE 8000
# The API process answers (no database or Redis needed: /health/ready is for load balancers).
# python, not curl: the slim image has no curl. compose.yaml turns this off for the services
# that serve no HTTP.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2)"]
# Granian serves the API; `docker stop` (SIGTERM) lets it answer the requests in flight first.
CMD ["m2m", "serve", "--host", "0.0.0.0", "--port", "8000"]
