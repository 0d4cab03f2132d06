"""Raw Kafka wire helpers for tests that must control every byte.

Real clients (confluent-kafka, kafka-python, kcat) cover the happy paths; this
module exists for what they will not send: garbage, wrong CRCs, unknown API
keys, unsupported versions, huge frame lengths, and for asserting exactly what
the broker put on the wire (record batch attributes, empty-versus-null record
sets, tagged fields).

It is written from the Kafka protocol specification, independent of the
broker's own code, and covers only the request/response versions the tests
use:

    ApiVersions  v0, v3       Metadata  v8
    Produce      v7, v8, v9   Fetch     v11, v12

plus record batch v2 (build with a correct or deliberately wrong CRC-32C, and
parse with CRC verification).

Layout:
    Writer / Reader      primitive encoders and decoders (classic and compact)
    Connection           one TCP connection: frames, correlation ids, EOF checks
    api_versions_*       ApiVersions request/response
    build_record_batch   record batch v2 encoder; parse_record_batches decoder
    produce_* / fetch_* / metadata_*   request encoders and response decoders
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

# --------------------------------------------------------------------------
# API keys and error codes (subset used by the tests)
# --------------------------------------------------------------------------

PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
CREATE_TOPICS = 19
DELETE_TOPICS = 20
DELETE_RECORDS = 21
DESCRIBE_CONFIGS = 32
ALTER_CONFIGS = 33
CREATE_PARTITIONS = 37
INCREMENTAL_ALTER_CONFIGS = 44
DESCRIBE_CLUSTER = 60

NONE = 0
OFFSET_OUT_OF_RANGE = 1
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
INVALID_FETCH_SIZE = 4
LEADER_NOT_AVAILABLE = 5
NOT_LEADER_OR_FOLLOWER = 6
MESSAGE_TOO_LARGE = 10
INVALID_TOPIC_EXCEPTION = 17
NOT_ENOUGH_REPLICAS = 19
INVALID_REQUIRED_ACKS = 21
UNSUPPORTED_VERSION = 35
TOPIC_ALREADY_EXISTS = 36
INVALID_PARTITIONS = 37
INVALID_REPLICATION_FACTOR = 38
INVALID_REQUEST = 42
UNSUPPORTED_COMPRESSION_TYPE = 76
INVALID_RECORD = 87
INVALID_TXN_STATE = 48

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}

# --------------------------------------------------------------------------
# CRC-32C (Castagnoli), table driven; record batches are small in tests
# --------------------------------------------------------------------------


def _make_crc32c_table() -> list[int]:
    poly = 0x82F63B78
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283  # the standard check value


# --------------------------------------------------------------------------
# Primitive encoding
# --------------------------------------------------------------------------


class Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def raw(self, b: bytes) -> "Writer":
        self.buf += b
        return self

    def int8(self, v: int) -> "Writer":
        self.buf += struct.pack(">b", v)
        return self

    def boolean(self, v: bool) -> "Writer":
        return self.int8(1 if v else 0)

    def int16(self, v: int) -> "Writer":
        self.buf += struct.pack(">h", v)
        return self

    def int32(self, v: int) -> "Writer":
        self.buf += struct.pack(">i", v)
        return self

    def uint32(self, v: int) -> "Writer":
        self.buf += struct.pack(">I", v)
        return self

    def int64(self, v: int) -> "Writer":
        self.buf += struct.pack(">q", v)
        return self

    def uvarint(self, v: int) -> "Writer":
        if v < 0:
            raise ValueError("uvarint must be non-negative")
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                self.buf.append(b | 0x80)
            else:
                self.buf.append(b)
                return self

    def varint(self, v: int) -> "Writer":  # zigzag, 32 or 64 bit alike
        return self.uvarint((v << 1) ^ (v >> 63))

    # classic (non-flexible) strings, bytes and arrays
    def string(self, s: Optional[str]) -> "Writer":
        if s is None:
            return self.int16(-1)
        b = s.encode()
        return self.int16(len(b)).raw(b)

    def bytes_(self, b: Optional[bytes]) -> "Writer":
        if b is None:
            return self.int32(-1)
        return self.int32(len(b)).raw(b)

    def array_len(self, n: Optional[int]) -> "Writer":
        return self.int32(-1 if n is None else n)

    # compact (flexible) strings, bytes and arrays
    def compact_string(self, s: Optional[str]) -> "Writer":
        if s is None:
            return self.uvarint(0)
        b = s.encode()
        return self.uvarint(len(b) + 1).raw(b)

    def compact_bytes(self, b: Optional[bytes]) -> "Writer":
        if b is None:
            return self.uvarint(0)
        return self.uvarint(len(b) + 1).raw(b)

    def compact_array_len(self, n: Optional[int]) -> "Writer":
        return self.uvarint(0 if n is None else n + 1)

    def tagged_fields(self, fields: Sequence[tuple[int, bytes]] = ()) -> "Writer":
        self.uvarint(len(fields))
        for tag, data in fields:
            self.uvarint(tag).uvarint(len(data)).raw(data)
        return self


class DecodeError(Exception):
    pass


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"need {n} bytes at {self.pos}, have {self.remaining()}")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def _unpack(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self.take(n))[0]

    def int8(self) -> int:
        return self._unpack(">b", 1)

    def boolean(self) -> bool:
        return self.int8() != 0

    def int16(self) -> int:
        return self._unpack(">h", 2)

    def int32(self) -> int:
        return self._unpack(">i", 4)

    def uint32(self) -> int:
        return self._unpack(">I", 4)

    def int64(self) -> int:
        return self._unpack(">q", 8)

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            b = self.take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise DecodeError("varint too long")

    def varint(self) -> int:
        u = self.uvarint()
        return (u >> 1) ^ -(u & 1)

    def string(self) -> Optional[str]:
        n = self.int16()
        return None if n < 0 else self.take(n).decode()

    def bytes_(self) -> Optional[bytes]:
        n = self.int32()
        return None if n < 0 else self.take(n)

    def array_len(self) -> Optional[int]:
        n = self.int32()
        return None if n < 0 else n

    def compact_string(self) -> Optional[str]:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_bytes(self) -> Optional[bytes]:
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1)

    def compact_array_len(self) -> Optional[int]:
        n = self.uvarint()
        return None if n == 0 else n - 1

    def tagged_fields(self) -> dict[int, bytes]:
        out = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            out[tag] = self.take(self.uvarint())
        return out


# --------------------------------------------------------------------------
# Framing and connections
# --------------------------------------------------------------------------


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its int32 length."""
    return struct.pack(">i", len(payload)) + payload


def request_header(
    api_key: int,
    api_version: int,
    correlation_id: int,
    client_id: Optional[str] = "sediment-tests",
    flexible: bool = False,
) -> bytes:
    """Request header v1 (classic) or v2 (flexible: adds empty tagged fields)."""
    w = Writer().int16(api_key).int16(api_version).int32(correlation_id).string(client_id)
    if flexible:
        w.tagged_fields()
    return w.getvalue()


class ConnectionClosed(Exception):
    pass


class Connection:
    """One TCP connection to a broker speaking raw Kafka frames."""

    _corr = itertools.count(1)

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    @classmethod
    def to(cls, bootstrap: str, timeout: float = 10.0) -> "Connection":
        host, port = bootstrap.rsplit(":", 1)
        return cls(host, int(port), timeout)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def _recv_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"timed out with {len(buf)}/{n} bytes")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except (ConnectionResetError, BrokenPipeError) as e:
                raise ConnectionClosed(str(e)) from e
            except socket.timeout as e:
                raise TimeoutError(f"timed out with {len(buf)}/{n} bytes") from e
            if not chunk:
                raise ConnectionClosed(f"eof after {len(buf)}/{n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self, timeout: Optional[float] = None) -> bytes:
        """Read one length-prefixed frame. Raises ConnectionClosed on EOF/reset."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        (n,) = struct.unpack(">i", self._recv_exact(4, deadline))
        if n < 0 or n > 256 * 1024 * 1024:
            raise DecodeError(f"implausible response frame length {n}")
        return self._recv_exact(n, deadline)

    def request(
        self,
        api_key: int,
        api_version: int,
        body: bytes,
        *,
        flexible_request: bool = False,
        flexible_response: Optional[bool] = None,
        timeout: Optional[float] = None,
        client_id: Optional[str] = "sediment-tests",
    ) -> Reader:
        """Send one request and return a Reader positioned at the response body.

        The response header is v0 (correlation id only) or, when
        flexible_response (default: same as flexible_request), v1 with tagged
        fields. ApiVersions responses always use header v0.
        """
        corr = next(self._corr)
        self.send_frame(
            request_header(api_key, api_version, corr, client_id, flexible_request) + body
        )
        resp = self.recv_frame(timeout)
        r = Reader(resp)
        got = r.int32()
        if got != corr:
            raise DecodeError(f"correlation id {got}, expected {corr}")
        if flexible_response is None:
            flexible_response = flexible_request
        if flexible_response:
            r.tagged_fields()
        return r

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Wait until the peer closes the connection; return whatever bytes
        arrived first (normally none). Raises TimeoutError if it stays open."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connection still open after {timeout}s ({len(got)} bytes received)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return bytes(got)
            except socket.timeout:
                continue
            if not chunk:
                return bytes(got)
            got += chunk


# --------------------------------------------------------------------------
# ApiVersions
# --------------------------------------------------------------------------


def api_versions_request_v0() -> bytes:
    return b""


def api_versions_request_v3(software_name: str = "sediment-tests", software_version: str = "1.0") -> bytes:
    return Writer().compact_string(software_name).compact_string(software_version).tagged_fields().getvalue()


@dataclass
class ApiVersionsResponse:
    error_code: int
    api_keys: dict[int, tuple[int, int]]
    throttle_time_ms: int = 0
    tagged_fields: dict[int, bytes] = field(default_factory=dict)
    trailing_bytes: int = 0


def parse_api_versions_v0(r: Reader) -> ApiVersionsResponse:
    err = r.int16()
    keys = {}
    n = r.array_len() or 0
    for _ in range(n):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        keys[k] = (lo, hi)
    return ApiVersionsResponse(err, keys, trailing_bytes=r.remaining())


def parse_api_versions_v3(r: Reader) -> ApiVersionsResponse:
    err = r.int16()
    keys = {}
    n = r.compact_array_len() or 0
    for _ in range(n):
        k, lo, hi = r.int16(), r.int16(), r.int16()
        r.tagged_fields()
        keys[k] = (lo, hi)
    throttle = r.int32()
    tags = r.tagged_fields()
    return ApiVersionsResponse(err, keys, throttle, tags, r.remaining())


def api_versions(conn: Connection) -> dict[int, tuple[int, int]]:
    """ApiVersions v0 on an open connection: {api_key: (min, max)}."""
    r = conn.request(API_VERSIONS, 0, api_versions_request_v0())
    resp = parse_api_versions_v0(r)
    if resp.error_code != 0:
        raise DecodeError(f"ApiVersions error {resp.error_code}")
    return resp.api_keys


def probe(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when host:port answers a well-formed ApiVersions v0 response."""
    try:
        with Connection(host, port, timeout) as c:
            r = c.request(API_VERSIONS, 0, b"", timeout=timeout)
            resp = parse_api_versions_v0(r)
            return resp.error_code == 0 and API_VERSIONS in resp.api_keys
    except (OSError, ConnectionClosed, DecodeError, TimeoutError):
        return False


# --------------------------------------------------------------------------
# Record batch v2
# --------------------------------------------------------------------------

BATCH_HEADER_LEN = 61  # baseOffset(8) .. recordsCount(4)
CRC_OFFSET = 17  # baseOffset 8 + batchLength 4 + partitionLeaderEpoch 4 + magic 1
CRC_COVERAGE_START = 21


@dataclass
class Record:
    key: Optional[bytes]
    value: Optional[bytes]
    headers: list[tuple[str, Optional[bytes]]] = field(default_factory=list)
    timestamp_delta: int = 0
    offset_delta: Optional[int] = None  # default: index in batch


def encode_record(rec: Record, offset_delta: int) -> bytes:
    body = Writer()
    body.int8(0)  # attributes
    body.varint(rec.timestamp_delta)
    body.varint(offset_delta)
    if rec.key is None:
        body.varint(-1)
    else:
        body.varint(len(rec.key)).raw(rec.key)
    if rec.value is None:
        body.varint(-1)
    else:
        body.varint(len(rec.value)).raw(rec.value)
    body.varint(len(rec.headers))
    for hk, hv in rec.headers:
        kb = hk.encode()
        body.varint(len(kb)).raw(kb)
        if hv is None:
            body.varint(-1)
        else:
            body.varint(len(hv)).raw(hv)
    b = body.getvalue()
    return Writer().varint(len(b)).raw(b).getvalue()


def build_record_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    base_timestamp: Optional[int] = None,
    partition_leader_epoch: int = -1,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    corrupt_crc: bool = False,
) -> bytes:
    """A v2 record batch with a correct CRC-32C, or a wrong one if corrupt_crc."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    encoded = b"".join(
        encode_record(r, r.offset_delta if r.offset_delta is not None else i)
        for i, r in enumerate(records)
    )
    last_offset_delta = max(
        (r.offset_delta if r.offset_delta is not None else i) for i, r in enumerate(records)
    ) if records else 0
    max_ts = base_timestamp + max((r.timestamp_delta for r in records), default=0)
    after_crc = (
        Writer()
        .int16(attributes)
        .int32(last_offset_delta)
        .int64(base_timestamp)
        .int64(max_ts)
        .int64(producer_id)
        .int16(producer_epoch)
        .int32(base_sequence)
        .int32(len(records))
        .raw(encoded)
        .getvalue()
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    batch_length = 4 + 1 + 4 + len(after_crc)  # epoch + magic + crc + rest
    return (
        Writer()
        .int64(base_offset)
        .int32(batch_length)
        .int32(partition_leader_epoch)
        .int8(2)
        .uint32(crc)
        .raw(after_crc)
        .getvalue()
    )


def forge_batch(
    batch: bytes,
    *,
    records_count: Optional[int] = None,
    last_offset_delta: Optional[int] = None,
    attributes: Optional[int] = None,
    body: Optional[bytes] = None,
) -> bytes:
    """A copy of a v2 batch with header fields or the record section replaced
    and the CRC-32C recomputed, so only what lies beneath the CRC is wrong:
    what a buggy or hostile client can send."""
    b = bytearray(batch[:BATCH_HEADER_LEN])
    rest = bytes(batch[BATCH_HEADER_LEN:]) if body is None else body
    if attributes is not None:
        struct.pack_into(">h", b, 21, attributes)
    if last_offset_delta is not None:
        struct.pack_into(">i", b, 23, last_offset_delta)
    if records_count is not None:
        struct.pack_into(">i", b, 57, records_count)
    b += rest
    struct.pack_into(">i", b, 8, len(b) - 12)
    struct.pack_into(">I", b, CRC_OFFSET, crc32c(bytes(b[CRC_COVERAGE_START:])))
    return bytes(b)


@dataclass
class RecordBatch:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    crc_ok: bool
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int
    raw: bytes
    records: Optional[list[tuple[int, int, Optional[bytes], Optional[bytes], list]]] = None
    # records: (offset, timestamp, key, value, headers) for uncompressed batches

    @property
    def compression(self) -> int:
        return self.attributes & 0x7

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta


def _decode_records(data: bytes, count: int, base_offset: int, base_ts: int) -> list:
    r = Reader(data)
    out = []
    for _ in range(count):
        length = r.varint()
        rr = Reader(r.take(length))
        rr.int8()
        ts = base_ts + rr.varint()
        off = base_offset + rr.varint()
        kl = rr.varint()
        key = None if kl < 0 else rr.take(kl)
        vl = rr.varint()
        value = None if vl < 0 else rr.take(vl)
        headers = []
        for _ in range(rr.varint()):
            hk = rr.take(rr.varint()).decode()
            hl = rr.varint()
            headers.append((hk, None if hl < 0 else rr.take(hl)))
        out.append((off, ts, key, value, headers))
    if r.remaining():
        raise DecodeError(f"{r.remaining()} bytes after the last record")
    return out


def parse_record_batches(data: bytes, *, allow_partial_tail: bool = True) -> list[RecordBatch]:
    """Split a record set into v2 batches, checking each CRC-32C.

    A fetch response may end with a partial batch (Kafka allows it); it is
    dropped when allow_partial_tail is true."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 12:
            if allow_partial_tail:
                break
            raise DecodeError("truncated batch header")
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        total = 12 + batch_length
        if pos + total > len(data):
            if allow_partial_tail:
                break
            raise DecodeError("truncated batch")
        raw = data[pos : pos + total]
        r = Reader(raw)
        r.int64()
        r.int32()
        epoch = r.int32()
        magic = r.int8()
        if magic != 2:
            raise DecodeError(f"magic {magic} at offset {base_offset}")
        crc = r.uint32()
        attrs = r.int16()
        lod = r.int32()
        bts = r.int64()
        mts = r.int64()
        pid = r.int64()
        pep = r.int16()
        bseq = r.int32()
        cnt = r.int32()
        crc_ok = crc32c(raw[CRC_COVERAGE_START:]) == crc
        b = RecordBatch(base_offset, batch_length, epoch, magic, crc, crc_ok, attrs, lod,
                        bts, mts, pid, pep, bseq, cnt, raw)
        if attrs & 0x7 == 0 and crc_ok:
            b.records = _decode_records(raw[BATCH_HEADER_LEN:], cnt, base_offset, bts)
        out.append(b)
        pos += total
    return out


# --------------------------------------------------------------------------
# Produce v7, v8 (classic) and v9 (flexible)
# --------------------------------------------------------------------------


def produce_request(
    version: int,
    topic: str,
    partition: int,
    records: Optional[bytes],
    *,
    acks: int = -1,
    timeout_ms: int = 10000,
    transactional_id: Optional[str] = None,
) -> bytes:
    if version not in (3, 4, 5, 6, 7, 8, 9, 10, 11, 12):
        raise ValueError(f"produce v{version} not implemented by the test encoder")
    w = Writer()
    if version >= 9:
        w.compact_string(transactional_id).int16(acks).int32(timeout_ms)
        w.compact_array_len(1).compact_string(topic)
        w.compact_array_len(1).int32(partition).compact_bytes(records).tagged_fields()
        w.tagged_fields()  # topic
        w.tagged_fields()  # request
    else:
        w.string(transactional_id).int16(acks).int32(timeout_ms)
        w.array_len(1).string(topic)
        w.array_len(1).int32(partition).bytes_(records)
    return w.getvalue()


@dataclass
class ProducePartitionResponse:
    topic: str
    partition: int
    error_code: int
    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    record_errors: list = field(default_factory=list)
    error_message: Optional[str] = None


def parse_produce_response(version: int, r: Reader) -> list[ProducePartitionResponse]:
    out = []
    flex = version >= 9
    ntopics = (r.compact_array_len() if flex else r.array_len()) or 0
    for _ in range(ntopics):
        name = r.compact_string() if flex else r.string()
        nparts = (r.compact_array_len() if flex else r.array_len()) or 0
        for _ in range(nparts):
            idx = r.int32()
            err = r.int16()
            base = r.int64()
            lat = r.int64() if version >= 2 else -1
            lso = r.int64() if version >= 5 else -1
            rec_errs = []
            msg = None
            if version >= 8:
                nerr = (r.compact_array_len() if flex else r.array_len()) or 0
                for _ in range(nerr):
                    bi = r.int32()
                    bm = r.compact_string() if flex else r.string()
                    if flex:
                        r.tagged_fields()
                    rec_errs.append((bi, bm))
                msg = r.compact_string() if flex else r.string()
            if flex:
                r.tagged_fields()
            out.append(ProducePartitionResponse(name, idx, err, base, lat, lso, rec_errs, msg))
        if flex:
            r.tagged_fields()
    r.int32()  # throttle_time_ms
    if flex:
        r.tagged_fields()
    return out


def produce(conn: Connection, version: int, topic: str, partition: int, records: bytes, *,
            acks: int = -1, timeout: float = 15.0) -> ProducePartitionResponse:
    flex = version >= 9
    r = conn.request(PRODUCE, version, produce_request(version, topic, partition, records, acks=acks),
                     flexible_request=flex, timeout=timeout)
    parts = parse_produce_response(version, r)
    if len(parts) != 1:
        raise DecodeError(f"expected one partition response, got {parts}")
    return parts[0]


# --------------------------------------------------------------------------
# Fetch v11 (classic) and v12 (flexible)
# --------------------------------------------------------------------------


def fetch_request(
    version: int,
    topic: str,
    partitions: Iterable[tuple[int, int]],  # (partition, fetch_offset)
    *,
    max_wait_ms: int = 500,
    min_bytes: int = 1,
    max_bytes: int = 50 * 1024 * 1024,
    partition_max_bytes: int = 1024 * 1024,
    isolation_level: int = 0,
) -> bytes:
    if version not in (11, 12):
        raise ValueError(f"fetch v{version} not implemented by the test encoder")
    parts = list(partitions)
    w = Writer()
    flex = version >= 12
    w.int32(-1)  # replica_id
    w.int32(max_wait_ms).int32(min_bytes).int32(max_bytes).int8(isolation_level)
    w.int32(0).int32(-1)  # session_id, session_epoch (-1: full fetch, no session)
    if flex:
        w.compact_array_len(1).compact_string(topic).compact_array_len(len(parts))
    else:
        w.array_len(1).string(topic).array_len(len(parts))
    for p, off in parts:
        w.int32(p).int32(-1).int64(off)
        if flex:
            w.int32(-1)  # last_fetched_epoch (v12)
        w.int64(-1).int32(partition_max_bytes)
        if flex:
            w.tagged_fields()
    if flex:
        w.tagged_fields()  # topic
        w.compact_array_len(0)  # forgotten topics
        w.compact_string("")  # rack_id
        w.tagged_fields()
    else:
        w.array_len(0)
        w.string("")
    return w.getvalue()


@dataclass
class FetchPartitionResponse:
    topic: str
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted_transactions: Optional[list]
    preferred_read_replica: int
    records: Optional[bytes]  # None means the broker sent a NULL record set


@dataclass
class FetchResponse:
    throttle_time_ms: int
    error_code: int
    session_id: int
    partitions: list[FetchPartitionResponse]


def parse_fetch_response(version: int, r: Reader) -> FetchResponse:
    flex = version >= 12
    throttle = r.int32()
    err = r.int16()
    sid = r.int32()
    parts = []
    for _ in range((r.compact_array_len() if flex else r.array_len()) or 0):
        name = r.compact_string() if flex else r.string()
        for _ in range((r.compact_array_len() if flex else r.array_len()) or 0):
            idx = r.int32()
            perr = r.int16()
            hwm = r.int64()
            lso = r.int64()
            logstart = r.int64()
            naborted = r.compact_array_len() if flex else r.array_len()
            aborted = None
            if naborted is not None:
                aborted = []
                for _ in range(naborted):
                    aborted.append((r.int64(), r.int64()))
                    if flex:
                        r.tagged_fields()
            prr = r.int32()
            recs = r.compact_bytes() if flex else r.bytes_()
            if flex:
                r.tagged_fields()
            parts.append(FetchPartitionResponse(name, idx, perr, hwm, lso, logstart, aborted, prr, recs))
        if flex:
            r.tagged_fields()
    if flex:
        r.tagged_fields()
    return FetchResponse(throttle, err, sid, parts)


def fetch(conn: Connection, version: int, topic: str, partitions: Iterable[tuple[int, int]], *,
          timeout: float = 30.0, **kw) -> FetchResponse:
    flex = version >= 12
    r = conn.request(FETCH, version, fetch_request(version, topic, partitions, **kw),
                     flexible_request=flex, timeout=timeout)
    return parse_fetch_response(version, r)


# --------------------------------------------------------------------------
# Metadata v8 (classic)
# --------------------------------------------------------------------------


def metadata_request_v8(topics: Optional[Sequence[str]], allow_auto_topic_creation: bool) -> bytes:
    w = Writer()
    if topics is None:
        w.array_len(None)
    else:
        w.array_len(len(topics))
        for t in topics:
            w.string(t)
    w.boolean(allow_auto_topic_creation).boolean(False).boolean(False)
    return w.getvalue()


@dataclass
class MetadataPartition:
    error_code: int
    partition: int
    leader: int
    leader_epoch: int
    replicas: list[int]
    isr: list[int]
    offline: list[int] = field(default_factory=list)


@dataclass
class MetadataTopic:
    error_code: int
    name: str
    is_internal: bool
    partitions: list[MetadataPartition]


@dataclass
class MetadataResponse:
    brokers: list[tuple[int, str, int, Optional[str]]]
    cluster_id: Optional[str]
    controller_id: int
    topics: dict[str, MetadataTopic]


def parse_metadata_v8(r: Reader) -> MetadataResponse:
    r.int32()  # throttle
    brokers = []
    for _ in range(r.array_len() or 0):
        brokers.append((r.int32(), r.string(), r.int32(), r.string()))
    cluster_id = r.string()
    controller = r.int32()
    topics = {}
    for _ in range(r.array_len() or 0):
        err = r.int16()
        name = r.string()
        internal = r.boolean()
        parts = []
        for _ in range(r.array_len() or 0):
            perr = r.int16()
            idx = r.int32()
            leader = r.int32()
            epoch = r.int32()
            replicas = [r.int32() for _ in range(r.array_len() or 0)]
            isr = [r.int32() for _ in range(r.array_len() or 0)]
            offline = [r.int32() for _ in range(r.array_len() or 0)]
            parts.append(MetadataPartition(perr, idx, leader, epoch, replicas, isr, offline))
        r.int32()  # topic authorized operations
        topics[name] = MetadataTopic(err, name, internal, parts)
    r.int32()  # cluster authorized operations
    return MetadataResponse(brokers, cluster_id, controller, topics)


def metadata(conn: Connection, topics: Optional[Sequence[str]], allow_auto_topic_creation: bool = False) -> MetadataResponse:
    r = conn.request(METADATA, 8, metadata_request_v8(topics, allow_auto_topic_creation))
    return parse_metadata_v8(r)


# ListOffsets v9 (flexible): the special timestamps of KIP-1005 among the others

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
MAX_TIMESTAMP = -3
EARLIEST_LOCAL_TIMESTAMP = -4  # v8+: the local log's start
LATEST_TIERED_TIMESTAMP = -5  # v9+: the last offset in the remote log (-1 if none)


@dataclass
class ListOffsetsPartition:
    error_code: int
    timestamp: int
    offset: int
    leader_epoch: int


def list_offsets(conn: Connection, topic: str, partition: int, timestamp: int, *, version: int = 9,
                 isolation_level: int = 0) -> ListOffsetsPartition:
    """One partition's ListOffsets answer (flexible versions, 6 and up)."""
    if version < 6:
        raise ValueError("list_offsets speaks the flexible versions (6+)")
    w = Writer().int32(-1).int8(isolation_level).compact_array_len(1).compact_string(topic)
    w.compact_array_len(1).int32(partition).int32(-1).int64(timestamp).tagged_fields()
    w.tagged_fields().tagged_fields()
    r = conn.request(LIST_OFFSETS, version, w.getvalue(), flexible_request=True)
    r.int32()  # throttle
    got = None
    for _ in range(r.compact_array_len() or 0):
        r.compact_string()
        for _ in range(r.compact_array_len() or 0):
            index, err, ts, off, epoch = r.int32(), r.int16(), r.int64(), r.int64(), r.int32()
            r.tagged_fields()
            if index == partition:
                got = ListOffsetsPartition(err, ts, off, epoch)
        r.tagged_fields()
    r.tagged_fields()
    if got is None:
        raise DecodeError(f"no answer for {topic}-{partition}")
    return got


def fetch_batches(conn: Connection, topic: str, partition: int, start: int, end: int, *,
                  version: int = 12, partition_max_bytes: int = 1024 * 1024,
                  timeout: float = 60.0) -> list[RecordBatch]:
    """Every record batch holding offsets in [start, end), via raw Fetch,
    with CRCs checked by the caller (RecordBatch.crc_ok)."""
    out: list[RecordBatch] = []
    pos = start
    deadline = time.monotonic() + timeout
    while pos < end:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fetched up to {pos} of [{start}, {end})")
        resp = fetch(conn, version, topic, [(partition, pos)], max_wait_ms=100,
                     partition_max_bytes=partition_max_bytes)
        (p,) = resp.partitions
        if p.error_code != NONE:
            raise DecodeError(f"fetch {topic}[{partition}]@{pos}: error {p.error_code}")
        if p.records is None:
            raise DecodeError(f"fetch {topic}[{partition}]@{pos}: NULL record set")
        batches = parse_record_batches(p.records)
        for b in batches:
            if b.last_offset >= pos:
                out.append(b)
                pos = b.last_offset + 1
    return out
