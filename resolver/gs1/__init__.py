"""GS1 Digital Link resolution (GS1-Conformant Resolver standard 1.2), free of any framework:
the URI syntax (:mod:`.keys`), compressed URIs (:mod:`.compressed`), and links as typed handle
values with the choice among them and the RFC 9264 linkset (:mod:`.links`)."""
