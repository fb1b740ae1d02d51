"""Bytes on disk and on tape: the cartridge file format and the EBM archive format."""
