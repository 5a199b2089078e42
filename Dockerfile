# One image for every role; the role and everything else come from IDIS_ variables.
FROM python:3.11-slim

RUN useradd --create-home --uid 10001 idis
WORKDIR /app
COPY pyproject.toml README.md ./
COPY resolver ./resolver
COPY registry ./registry
COPY nodes ./nodes
COPY migrations ./migrations
RUN pip install --no-cache-dir .

USER idis
ENV IDIS_DATA_DIR=/home/idis/data \
    IDIS_HTTP=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
ENTRYPOINT ["idis"]
CMD ["serve"]
