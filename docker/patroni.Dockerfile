# PostgreSQL with Patroni: one member of a registry cluster (helm/idis, patroni.image). Patroni
# from PyPI (4.x; Debian's is 3.0.2), in a venv readable by the postgres user it runs as, with
# the clients of both consensus stores the chart offers (Kubernetes, etcd v3).
FROM postgres:16-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/patroni \
    && /opt/patroni/bin/pip install --no-cache-dir "patroni[kubernetes,etcd3,psycopg3]==4.1.5" \
    && mkdir -p /var/lib/postgresql/data && chown postgres:postgres /var/lib/postgresql/data
USER postgres
EXPOSE 5432 8008
ENTRYPOINT ["/opt/patroni/bin/patroni"]
CMD ["/etc/patroni/patroni.yml"]
