"""Running things: settings, wiring, servers, federation, the CLI."""
