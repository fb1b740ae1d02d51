"""Extensible backup manager: native backups written onto the library's cartridges."""
