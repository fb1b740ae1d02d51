"""Where a cartridge's bytes live: the store beneath ``TapeCartridge``.

A cartridge reads and writes its file through a *medium file* (``medium.py``): positional
reads and writes, truncate, fsync, size. The plain store is the cartridge file itself (os
calls, exactly as before); the dedup store (``dedup_medium.py``) keeps in the same file a
*skeleton*: the header and the record headers, back to back (older cartridges: at their
usual offsets, payloads as holes), and stores the record payloads as content-defined chunks, compressed, once per library
(``chunk_store.py``: appended to pack files, ``pack.py``, found through an SQLite index,
``chunk_index.py``; read ahead in recipe order, ``chunk_read_ahead.py``), listed per
cartridge in a recipe sidecar (``recipe.py``). ``gc.py`` frees chunks no recipe references,
compacts packs and counts what the store saves. The on-disk layout and the crash-safety
argument are in docs/store-format.md.

This package must not know the record layout: it sees offsets and byte strings only.
"""
