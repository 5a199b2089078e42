"""The GS1 Digital Link resolver on the HTTP port (:mod:`nodes.gs1.front`)."""
