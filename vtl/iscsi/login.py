"""Login: text keys, security (CHAP) and operational negotiation (RFC 7143 sections 6, 13).

The state machine here is transport-free: ``LoginHandler.handle`` takes one Login Request's
header fields and key text and returns what the response must carry. The connection layer only
frames PDUs. That keeps the protocol rules (who answers which key, when a stage may change,
which status class a failure gets) in one testable place.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from vtl.iscsi.chap import ChapCredentials, ChapError, ChapExchange
from vtl.iscsi.config import ServerConfig, TargetConfig

SECURITY, OPERATIONAL, FULL_FEATURE = 0, 1, 3
MAX_KEYS_BYTES = 64 * 1024  # a login's accumulated key text may not exceed this
MAX_VALUE_LEN = 8192


class LoginStatus(enum.IntEnum):
    SUCCESS = 0x0000
    INITIATOR_ERROR = 0x0200
    AUTH_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    OUT_OF_RESOURCES = 0x0302


class LoginFailed(Exception):
    def __init__(self, status: LoginStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_keys(data: bytes | bytearray | memoryview) -> list[tuple[str, str]]:
    """``key=value`` pairs separated by NULs (ValueError if a pair has no ``=``)."""
    text = bytes(data).decode("utf-8", errors="strict")
    pairs: list[tuple[str, str]] = []
    for item in text.split("\0"):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or len(key) > 63 or len(value) > MAX_VALUE_LEN:
            raise ValueError(f"malformed key {item[:40]!r}")
        pairs.append((key, value))
    return pairs


def encode_keys(pairs: dict[str, str] | list[tuple[str, str]]) -> bytes:
    items = pairs.items() if isinstance(pairs, dict) else pairs
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in items)


@dataclass
class SessionParams:
    """The negotiated operational parameters of a session/connection (defaults per RFC)."""

    header_digest: bool = False
    data_digest: bool = False
    max_recv_dsl: int = 8192  # ours: the most the initiator may put in one PDU to us
    max_xmit_dsl: int = 8192  # the initiator's MaxRecvDataSegmentLength
    max_burst: int = 262144
    first_burst: int = 65536
    immediate_data: bool = True
    initial_r2t: bool = True
    max_outstanding_r2t: int = 1
    data_pdu_in_order: bool = True
    data_sequence_in_order: bool = True
    error_recovery_level: int = 0
    max_connections: int = 1
    time2wait: int = 2
    time2retain: int = 20


_RANGES = {
    "MaxRecvDataSegmentLength": (512, 2**24 - 1),
    "MaxBurstLength": (512, 2**24 - 1),
    "FirstBurstLength": (512, 2**24 - 1),
    "DefaultTime2Wait": (0, 3600),
    "DefaultTime2Retain": (0, 3600),
    "MaxOutstandingR2T": (1, 65535),
    "MaxConnections": (1, 65535),
    "ErrorRecoveryLevel": (0, 2),
}
# Keys that mean nothing in a discovery session (RFC 7143 section 13).
_SESSION_ONLY = {
    "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
    "DataPDUInOrder", "DataSequenceInOrder", "DefaultTime2Wait", "DefaultTime2Retain",
    "MaxConnections",
}
_DECLARATIONS = {"InitiatorName", "InitiatorAlias", "TargetName", "SessionType"}


def _number(key: str, value: str) -> int | None:
    lo, hi = _RANGES[key]
    try:
        n = int(value, 0)
    except ValueError:
        return None
    return n if lo <= n <= hi else None


def _bool(value: str) -> bool | None:
    return {"Yes": True, "No": False}.get(value)


class AuthState(enum.Enum):
    START = 0
    WAIT_CHAP_A = 1
    WAIT_CHAP_R = 2
    DONE = 3


@dataclass
class LoginResult:
    """What one Login Response carries."""

    transit: bool
    csg: int
    nsg: int
    keys: list[tuple[str, str]]
    status: LoginStatus = LoginStatus.SUCCESS
    complete: bool = False  # full feature phase reached


@dataclass
class LoginHandler:
    """Negotiates one connection's login, one request at a time."""

    server: ServerConfig
    initiator_name: str = ""
    initiator_alias: str = ""
    session_type: str = "Normal"
    target: TargetConfig | None = None
    params: SessionParams = field(default_factory=SessionParams)
    auth: AuthState = AuthState.START
    _chap: ChapExchange | None = None
    _first: bool = True
    _declared_mrdsl: bool = False
    _pending: bytearray = field(default_factory=bytearray)
    _stage: int | None = None  # the CSG the next request must carry

    def __post_init__(self) -> None:
        self.params.max_recv_dsl = self.server.limits.max_recv_data_segment_length

    @property
    def discovery(self) -> bool:
        return self.session_type == "Discovery"

    @property
    def started(self) -> bool:
        """Whether the first Login Request has been seen."""
        return not self._first

    def handle(self, flags: int, data: bytes | bytearray | memoryview) -> LoginResult:
        """Process one Login Request (its byte-1 flags and data segment)."""
        transit = bool(flags & 0x80)
        cont = bool(flags & 0x40)
        csg = (flags >> 2) & 3
        nsg = flags & 3
        if csg not in (SECURITY, OPERATIONAL) or (transit and (nsg == 2 or nsg <= csg)) or (
            transit and cont
        ):
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "invalid login stage transition")
        if self._stage is not None and csg != self._stage:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR,
                              f"login stage {csg} where stage {self._stage} was expected")
        self._pending += data
        if len(self._pending) > MAX_KEYS_BYTES:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, "login key text too long")
        if cont:
            # The rest of the text comes in the next PDU; answer with an empty response.
            return LoginResult(False, csg, 0, [])
        try:
            pairs = parse_keys(self._pending)
        except (ValueError, UnicodeDecodeError) as exc:
            raise LoginFailed(LoginStatus.INITIATOR_ERROR, str(exc)) from exc
        self._pending.clear()
        keys = dict(pairs)
        answer: list[tuple[str, str]] = []
        if self._first:
            self._first = False
            self._declare(keys, answer)
        if csg == SECURITY:
            self._security(keys, answer)
        elif self._credentials()[0] is not None and self.auth is not AuthState.DONE:
            raise LoginFailed(LoginStatus.AUTH_FAILURE, "authentication required")
        else:
            self.auth = AuthState.DONE
        self._operational(keys, answer)
        if transit and self.auth is not AuthState.DONE:
            transit = False  # stay in security negotiation until CHAP has finished
        if transit and not self._declared_mrdsl and nsg == FULL_FEATURE:
            answer.append(("MaxRecvDataSegmentLength", str(self.params.max_recv_dsl)))
            self._declared_mrdsl = True
        complete = transit and nsg == FULL_FEATURE
        self._stage = nsg if transit else csg
        return LoginResult(transit, csg, nsg if transit else 0, answer, complete=complete)

    # ---- first request: who is logging in to what ------------------------------------------
    def _declare(self, keys: dict[str, str], answer: list[tuple[str, str]]) -> None:
        self.initiator_name = keys.get("InitiatorName", "")
        self.initiator_alias = keys.get("InitiatorAlias", "")
        if not self.initiator_name:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "InitiatorName missing")
        self.session_type = keys.get("SessionType", "Normal")
        if self.session_type not in ("Normal", "Discovery"):
            raise LoginFailed(LoginStatus.SESSION_TYPE_NOT_SUPPORTED, "unknown SessionType")
        if self.discovery:
            return
        name = keys.get("TargetName")
        if not name:
            raise LoginFailed(LoginStatus.MISSING_PARAMETER, "TargetName missing")
        target = self.server.target(name)
        if target is None:
            raise LoginFailed(LoginStatus.NOT_FOUND, f"no target {name}")
        if not target.allows(self.initiator_name):
            raise LoginFailed(
                LoginStatus.AUTHORIZATION_FAILURE,
                f"initiator {self.initiator_name} is not allowed on {target.iqn}",
            )
        self.target = target
        answer.append(("TargetPortalGroupTag", str(self.server.portal_group_tag)))
        if target.alias:
            answer.append(("TargetAlias", target.alias))

    # ---- security stage ------------------------------------------------------------------
    def _credentials(self) -> tuple[ChapCredentials | None, ChapCredentials | None]:
        """(CHAP, mutual CHAP) for this initiator: its ACL's, else the server's."""
        target = self.target
        if target is None:  # discovery: the initiator's ACL on any target, if it has one
            target = next((t for t in self.server.targets if self.initiator_name in t.acls),
                          None)
        if target is None:
            return self.server.chap, self.server.mutual_chap
        return target.credentials(self.initiator_name, self.server.chap,
                                       self.server.mutual_chap)

    def _security(self, keys: dict[str, str], answer: list[tuple[str, str]]) -> None:
        chap, mutual = self._credentials()
        try:
            if "AuthMethod" in keys and self.auth is AuthState.START:
                offered = [m.strip() for m in keys["AuthMethod"].split(",")]
                if chap is not None:
                    if "CHAP" not in offered:
                        raise LoginFailed(LoginStatus.AUTH_FAILURE, "CHAP required")
                    answer.append(("AuthMethod", "CHAP"))
                    self._chap = ChapExchange(chap, mutual)
                    self.auth = AuthState.WAIT_CHAP_A
                elif "None" in offered:
                    answer.append(("AuthMethod", "None"))
                    self.auth = AuthState.DONE
                else:
                    answer.append(("AuthMethod", "Reject"))
                    raise LoginFailed(LoginStatus.AUTH_FAILURE, "no acceptable AuthMethod")
            elif self.auth is AuthState.WAIT_CHAP_A and "CHAP_A" in keys:
                assert self._chap is not None
                answer.extend(self._chap.select_algorithm(keys["CHAP_A"]).items())
                self.auth = AuthState.WAIT_CHAP_R
            elif self.auth is AuthState.WAIT_CHAP_R and "CHAP_R" in keys:
                assert self._chap is not None
                answer.extend(self._chap.verify(keys).items())
                self.auth = AuthState.DONE
            elif self.auth is AuthState.START and chap is None:
                self.auth = AuthState.DONE  # no AuthMethod offered and none required
        except ChapError as exc:
            raise LoginFailed(LoginStatus.AUTH_FAILURE, str(exc)) from exc

    # ---- operational keys ----------------------------------------------------------------
    def _operational(self, keys: dict[str, str], answer: list[tuple[str, str]]) -> None:
        p = self.params
        lim = self.server.limits
        for key, value in keys.items():
            if key in _DECLARATIONS or key == "AuthMethod" or key.startswith("CHAP_"):
                continue
            if value in ("NotUnderstood", "Irrelevant", "Reject"):
                continue
            if self.discovery and key in _SESSION_ONLY:
                answer.append((key, "Irrelevant"))
                continue
            result: str | None
            if key in ("HeaderDigest", "DataDigest"):
                choices = [v.strip() for v in value.split(",")]
                allowed = lim.header_digests if key == "HeaderDigest" else lim.data_digests
                result = next((c for c in choices if c in allowed), None)
                if result is not None:
                    setattr(p, "header_digest" if key == "HeaderDigest" else "data_digest",
                            result == "CRC32C")
            elif key == "MaxRecvDataSegmentLength":
                n = _number(key, value)
                if n is not None:
                    p.max_xmit_dsl = n
                    continue  # declarative: no answer (ours is declared separately)
                result = None
            elif key in ("MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
                         "MaxConnections", "ErrorRecoveryLevel", "DefaultTime2Retain"):
                n = _number(key, value)
                ours = {
                    "MaxBurstLength": lim.max_burst_length,
                    "FirstBurstLength": lim.first_burst_length,
                    "MaxOutstandingR2T": lim.max_outstanding_r2t,
                    "MaxConnections": 1,
                    "ErrorRecoveryLevel": 0,
                    "DefaultTime2Retain": lim.default_time2retain,
                }[key]
                result = None if n is None else str(min(n, ours))
                if result is not None:
                    attr = {
                        "MaxBurstLength": "max_burst", "FirstBurstLength": "first_burst",
                        "MaxOutstandingR2T": "max_outstanding_r2t",
                        "MaxConnections": "max_connections",
                        "ErrorRecoveryLevel": "error_recovery_level",
                        "DefaultTime2Retain": "time2retain",
                    }[key]
                    setattr(p, attr, int(result))
            elif key == "DefaultTime2Wait":
                n = _number(key, value)
                result = None if n is None else str(max(n, lim.default_time2wait))
                if result is not None:
                    p.time2wait = int(result)
            elif key in ("InitialR2T", "DataPDUInOrder", "DataSequenceInOrder"):
                b = _bool(value)
                ours_b = lim.initial_r2t if key == "InitialR2T" else True
                result = None if b is None else ("Yes" if (b or ours_b) else "No")
                if result is not None:
                    attr = {"InitialR2T": "initial_r2t", "DataPDUInOrder": "data_pdu_in_order",
                            "DataSequenceInOrder": "data_sequence_in_order"}[key]
                    setattr(p, attr, result == "Yes")
            elif key == "ImmediateData":
                b = _bool(value)
                result = None if b is None else ("Yes" if (b and lim.immediate_data) else "No")
                if result is not None:
                    p.immediate_data = result == "Yes"
            elif key in ("IFMarker", "OFMarker"):
                result = "No" if _bool(value) is not None else None
            elif key in ("IFMarkInt", "OFMarkInt"):
                result = "Irrelevant"
            elif key in ("TargetAlias", "TargetAddress", "TargetPortalGroupTag"):
                result = None  # target-declared keys the initiator may not send
            else:
                answer.append((key, "NotUnderstood"))
                continue
            answer.append((key, result if result is not None else "Reject"))
        if p.first_burst > p.max_burst:
            p.first_burst = p.max_burst
