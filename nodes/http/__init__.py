"""The HTTP edge: the Handle REST API, the web proxy and the batch endpoint."""
