"""The DNS front end: identifiers as names under ``IDIS_DNS_ZONE`` (see README, "DNS")."""
