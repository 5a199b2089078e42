"""Answering queries: the identifier and value model, the resolution chain and the codecs.

Everything in this package is pure: no framework, driver or socket imports. I/O reaches it
through the small protocols in :mod:`resolver.ports`.
"""
