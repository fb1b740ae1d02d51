"""Helpers of the PostgreSQL translator (``translators.postgresql``), one job per module.

* ``source``      - the dataset's source string: a libpq conninfo plus the EBM's own keys;
* ``tools``       - which PostgreSQL client programs to run (pg_basebackup, pg_dump);
* ``server``      - a psycopg connection with one-line errors, the server facts a backup
                    needs, archiving set-up and the WAL switch that closes a backup's range;
* ``wal``         - WAL segment names and LSNs, segment checks, commit times, the spool;
* ``wal_records`` - commit times read from a segment's own pages and records;
* ``replication`` - a base backup read through the replication protocol (PostgreSQL 15+);
* ``basebackup``  - the base backup's tar (from ``replication``, or ``pg_basebackup`` on
                    stdin for older servers) turned into pax members on the fly;
* ``logical``     - schema SQL and every table as CSV from one exported snapshot;
* ``recovery``    - the recovery settings a restored data directory starts with;
* ``unpack``      - restored members into a directory that appears only when complete.

psycopg (v3) is imported only here, when a PostgreSQL dataset is backed up; the EBM itself
does not need it.
"""
