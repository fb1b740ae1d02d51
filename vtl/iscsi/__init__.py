"""The embedded userspace iSCSI target (RFC 7143, ErrorRecoveryLevel 0, asyncio).

Modules, each with one job:

* ``pdu``        - wire layouts (construct, the reference) and the fast struct encoders.
* ``login``      - login state machine: key text, CHAP stage, operational negotiation.
* ``chap``       - CHAP MD5 and mutual CHAP (RFC 1994 with the RFC 7143 keys).
* ``config``     - what is exported: targets, LUN maps, ACLs, CHAP, limits.
* ``session``    - per-session identity (the I_T nexus the models see) and CmdSN window.
* ``connection`` - PDU framing into preallocated buffers, SCSI/Data-In/Data-Out/R2T, NOP,
  Text (SendTargets), task management, logout, reject.
* ``target``     - portals, sessions, one worker thread per LUN, clean shutdown; the
  docstring there records the LUN layout decision (one target per library, LUN 0 = changer,
  LUN 1..N = drives).

Start it with ``vtl --root DIR serve --portal 127.0.0.1:3260`` (vtl/cli/serve.py).
"""
