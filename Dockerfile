# The image compose.yaml runs: API, worker, beat and Flower, from one install.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api ./api
COPY domain ./domain
COPY workers ./workers
RUN pip install --no-cache-dir '.[ops]' && useradd --system m2m
USER m2m
EXPOSE 8000
CMD ["m2m", "serve", "--host", "0.0.0.0", "--port", "8000"]
