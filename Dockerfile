# The kafkastore services (HTTP API, indexer, CLI) for docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY kafkastore ./kafkastore
COPY writer ./writer
COPY indexer ./indexer
COPY consumers ./consumers
COPY dev ./dev
COPY bench ./bench
RUN pip install .

# No root needed: the services only talk to Kafka and PostgreSQL over the network.
RUN useradd --system --uid 10001 kafkastore
USER kafkastore
EXPOSE 8080
ENTRYPOINT ["kafkastore"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
