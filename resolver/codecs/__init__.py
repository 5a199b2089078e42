"""Wire and storage forms of the value model."""
