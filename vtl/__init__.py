"""Virtual tape library: cartridge store, SCSI device models and their transports."""

# The library's SQLite catalog file inside a library root. Here, not in vtl.catalog, so the
# EBM names the same file without importing the media catalog (and sqlite3) at start-up.
CATALOG_NAME = "catalog.sqlite"
