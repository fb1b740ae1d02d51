"""The EBM's remote tape path: drive a tape library as SCSI devices from another host.

What it owns: the client side of SCSI. ``iscsi_url`` parses ``iscsi://HOST[:PORT]/IQN[/LUN]``;
``initiator`` is an iSCSI initiator (RFC 7143) built on the target's own PDU layouts
(``vtl.iscsi.pdu``); ``kernel_devices`` reaches the same commands through Linux ``/dev/sg*``
(SG_IO) and ``/dev/nst*`` (st ioctls); ``scsi_client`` turns SSC/SMC commands into CDBs and
sense back into exceptions, over either transport; ``drive_encryption`` loads and clears
the drive's own encryption key (SECURITY PROTOCOL OUT, SSC-4); ``remote_library`` shows a
remote library to the data mover through the same small surface the in-process
``vtl.library`` offers it (claim a drive, load a barcode, a cartridge to read and write).

Why under ``ebm/`` and not ``vtl/iscsi/``: ``vtl/`` is the library's side (device models and
the transports that carry CDBs *to* them); this package is a client of any tape library and
serves the data mover only, on a host that need not hold a library at all. It shares just
the wire format (``vtl.iscsi.pdu``, ``vtl.iscsi.chap``) and the opcode and element-type
names with the target.

What it must not do: import the library's own device models or cartridge store. Everything
it knows about the far side arrives as SCSI data and sense, so the same code drives
``vtl serve``, tgt or a real library.
"""
