"""The federation console: ``/console``, a live page served by every node, and
``GET /api/console``, the JSON it polls (:mod:`nodes.console.routes`), assembled from what the
node already knows and what :mod:`nodes.console.watch` gathers in the background."""
