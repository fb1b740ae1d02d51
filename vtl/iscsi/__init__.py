"""The embedded userspace iSCSI target (RFC 7143, ErrorRecoveryLevel 0, asyncio).

Modules, each with one job:

* ``pdu``        - wire layouts (construct, the reference) and the fast struct encoders.
* ``login``      - login state machine: key text, CHAP stage, operational negotiation.
* ``chap``       - CHAP MD5 and mutual CHAP (RFC 1994 with the RFC 7143 keys).
* ``config``     - what is exported: targets, LUN maps, ACLs, CHAP, limits.
* ``session``    - per-session identity (the I_T nexus the models see) and CmdSN window.
* ``connection`` - one connection's life on its own thread: dispatch, login, NOP, Text
  (SendTargets), task management, logout; put together from the job modules below.
* ``framing``    - PDUs on the socket: headers and data segments into preallocated buffers,
  digests, ``sendmsg``.
* ``stream_paths`` - READ(6)/WRITE(6) answered straight from the 48-byte header.
* ``data_out``   - immediate data, Data-Out and R2T: a write's buffer filled in order.
* ``scsi_commands`` - a SCSI Command to its device (inline or on the LUN's worker), REPORT
  LUNS for every LUN address.
* ``responses``  - SCSI Response, Data-In and Reject PDUs; ending a task.
* ``task``       - one SCSI task's state; ``lun_worker`` - one device's lock and thread;
  ``services``   - what a connection needs from the target (no connection <-> target import).
* ``target``     - portals, sessions, one worker thread per LUN, clean shutdown; the
  docstring there records the LUN layout decision (one target per library, LUN 0 = changer,
  LUN 1..N = drives).

Start it with ``vtl --root DIR serve --portal 127.0.0.1:3260`` (vtl/cli/serve.py).
"""
