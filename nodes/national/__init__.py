"""The national tier: one PostgreSQL registry under Patroni and etcd (DESIGN.md section 1)."""
