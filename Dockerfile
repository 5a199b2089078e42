# One image for every role; the role and everything else come from IDIS_ variables.
# The build stage has the C compiler that registry/_plain_forms.c (idis import's hot loop)
# needs; the image itself gets only the wheels.
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
RUN useradd --create-home --uid 10001 idis
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels

USER idis
ENV IDIS_DATA_DIR=/home/idis/data \
    IDIS_HTTP=0.0.0.0:8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
ENTRYPOINT ["idis"]
CMD ["serve"]
