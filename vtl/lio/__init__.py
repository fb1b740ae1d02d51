"""The kernel LIO export: a TCMU handler that answers LIO's CDBs with the library's models.

``ring`` (the shared-memory layout), ``uio`` (finding and mapping our TCMU devices),
``handler`` (one thread per device, running CDBs through vtl.scsi) and ``export`` (the
rtslib-fb configuration: user backstores, fabric targets, LUNs, ACLs, CHAP). The admin's side
(targetcli commands, the systemd unit) is in the repository's ``targetcli/`` folder. Nothing
here is imported by ``vtl`` unless a ``vtl lio`` command runs.
"""
