# The same steps as the README quick start and .ci/run: install the package, run it.
FROM python:3.11-slim

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY worker ./worker
RUN pip install --no-cache-dir .
COPY sequences ./sequences
COPY templates ./templates
COPY content ./content
COPY crm ./crm
COPY examples ./examples

RUN useradd --create-home --uid 10001 nurture && chown -R nurture /app
USER 10001

ENV NURTURE_OUTBOX_DIR=/app/outbox
EXPOSE 8000
CMD ["nurture", "worker"]
