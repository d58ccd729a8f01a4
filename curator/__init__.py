"""vila2-curator: the data side of the VILA² loop (store, ingest, SQL, engines, filters, builds, inspection)."""
__version__ = "0.1.0"
