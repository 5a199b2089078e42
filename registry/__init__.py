"""The source of truth and writing to it: tables, stores, registration, authorization, import."""
