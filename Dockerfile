# One image for every role; the role and everything else come from IDIS_ variables (README,
# "Deploy"). Two stages: the build stage has the C compiler that registry/_plain_forms.c
# (idis import's hot loop) needs and turns idis and its dependencies into wheels; the image
# itself gets only those wheels on python:slim: no compiler, no pip cache, no source tree.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY resolver ./resolver
COPY registry ./registry
COPY nodes ./nodes
COPY migrations ./migrations
COPY loadtests ./loadtests
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --create-home idis

# Not root: the uid the Helm chart's securityContext names. The data directory is the only
# place written to (mount a volume there, or use a read-only root file system with /data and
# /tmp writable); listeners are unprivileged ports (DNS on 5353, mapped to 53 by a Service).
USER 10001:10001
WORKDIR /data
ENV IDIS_DATA_DIR=/data \
    IDIS_HTTP=0.0.0.0:8000 \
    IDIS_HANDLE=0.0.0.0:2641 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000 2641/tcp 2641/udp
# For plain `docker run`; Kubernetes ignores it and uses the chart's probes (/healthz, /readyz).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["idis"]
CMD ["serve"]
