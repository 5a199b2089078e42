"""The deployed IDIS secondary-node API (SNMS, DESIGN.md section 2.3) on the HTTP port.

Its routes decode SNMS bodies, call the node's one :class:`registry.service.Registrar` and
authenticator (so the same record, rights and quotas as through REST and native), and encode
SNMS answers: ``{"status", "message", "data"}`` with status 1 ok, -1 not logged in, -2
business failure, -3 no permission, -4 internal.
"""
