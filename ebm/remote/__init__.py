"""The EBM's remote tape path: drive a tape library as SCSI devices from another host.

What it owns: the client side of SCSI. ``iscsi_url`` parses ``iscsi://HOST[:PORT]/IQN[/LUN]``;
``initiator`` is an iSCSI initiator (RFC 7143) built on the target's own PDU layouts
(``vtl.iscsi.pdu``); ``kernel_devices`` reaches the same commands through Linux ``/dev/sg*``
(SG_IO) and ``/dev/nst*`` (st ioctls); ``scsi_client`` turns SSC/SMC commands into CDBs and
sense back into exceptions, over either transport; ``remote_library`` shows a remote library
to the data mover through the same small surface the in-process ``vtl.library`` offers it
(claim a drive, load a barcode, a cartridge to read and write).

What it must not do: import the library's own device models or cartridge store. Everything
it knows about the far side arrives as SCSI data and sense, so the same code drives
``vtl serve``, tgt or a real library.
"""
