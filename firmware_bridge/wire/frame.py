"""Framing: header + payload + CRC-16/CCITT-FALSE, COBS-encoded, terminated by 0x00.

::

    wire:  COBS(body) 0x00
    body:  version u8 | type u8 | seq u16 | ack u16 | payload … | crc u16   (little-endian)

The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0x0000;
check value 0x29B1 for ASCII "123456789") over version..payload, appended little-endian.
:class:`FrameDecoder` is a streaming decoder: feed it any chunks of bytes and it yields every
frame and every fault; garbage is skipped up to the next 0x00 delimiter. Pure code.
"""

from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass
from enum import Enum

from cobs import cobs

from firmware_bridge.errors import WireError
from firmware_bridge.wire.messages import (
    MESSAGE_CLASSES,
    PROTOCOL_VERSION,
    Message,
)

HEADER = struct.Struct("<BBHH")
CRC = struct.Struct("<H")
HEADER_BYTES = HEADER.size  # 6
CRC_BYTES = CRC.size  # 2
MAX_BODY_BYTES = 254  # header + payload + CRC; COBS of 254 bytes is at most 255 bytes
MAX_PAYLOAD_BYTES = MAX_BODY_BYTES - HEADER_BYTES - CRC_BYTES  # 246
MAX_WIRE_BYTES = MAX_BODY_BYTES + 1 + 1  # COBS overhead byte + delimiter = 256
DELIMITER = b"\x00"
SEQ_MODULUS = 0x1_0000  # sequence numbers are u16; 0 means "not sequenced"


def crc16_ccitt_false(data: bytes | memoryview) -> int:
    """CRC-16/CCITT-FALSE (``binascii.crc_hqx`` is its table, with init 0xFFFF)."""
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame: the header fields and the message."""

    seq: int  # 1..65535 for sequenced messages, 0 for the others
    ack: int  # cumulative acknowledgement: last in-order sequence received, 0 = none
    message: Message
    version: int = PROTOCOL_VERSION


def encode_frame(message: Message, *, seq: int, ack: int) -> bytes:
    """The bytes on the wire for ``message``, delimiter included."""
    if (seq != 0) != message.SEQUENCED:
        expect = "1..65535" if message.SEQUENCED else "0"
        raise WireError(f"{message.TYPE.name}: seq {seq}, expected {expect}")
    if not 0 <= seq < SEQ_MODULUS or not 0 <= ack < SEQ_MODULUS:
        raise WireError(f"{message.TYPE.name}: seq {seq} / ack {ack} outside 0..65535")
    payload = message.encode_payload()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise WireError(
            f"{message.TYPE.name}: payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}"
        )
    return frame_bytes(message.TYPE, payload, seq, ack)


def frame_bytes(type_code: int, payload: bytes, seq: int, ack: int) -> bytes:
    """Header, CRC, COBS and delimiter around an encoded ``payload``, unchecked: the caller
    guarantees 0 ≤ seq, ack ≤ 65535 and at most MAX_PAYLOAD_BYTES of payload. The link keeps
    each message's payload, so a (re)transmission costs only this."""
    body = _HEADER_PACK(PROTOCOL_VERSION, type_code, seq, ack) + payload
    encoded: bytes = _cobs_encode(body + _CRC_PACK(_crc_hqx(body, 0xFFFF)))
    return encoded + DELIMITER


class FaultKind(Enum):
    """Why a chunk between delimiters was not a usable frame."""

    OVERSIZE = "oversize"  # more than MAX_WIRE_BYTES before a delimiter
    COBS = "cobs"  # not valid COBS
    SHORT = "short"  # shorter than header + CRC
    CRC = "crc"  # checksum mismatch
    VERSION = "version"  # a protocol version this side does not speak
    UNKNOWN_TYPE = "unknown_type"
    BAD_PAYLOAD = "bad_payload"  # wrong length or a field out of range
    BAD_SEQ = "bad_seq"  # sequenced type without seq, or the reverse

    @property
    def damaged(self) -> bool:
        """The bytes were damaged on the line (the header cannot be trusted)."""
        return self in (FaultKind.OVERSIZE, FaultKind.COBS, FaultKind.SHORT, FaultKind.CRC)


@dataclass(frozen=True, slots=True)
class FrameFault:
    """A chunk that failed to decode. Header fields are set when the CRC was good."""

    kind: FaultKind
    detail: str
    size: int  # bytes skipped, delimiter excluded
    type_code: int | None = None
    seq: int | None = None
    ack: int | None = None
    version: int | None = None  # the header's version byte (set when the CRC was good)


RawFrame = tuple[int, int, Message]  # (seq, ack, message): a decoded frame without the wrapper


def decode_raw(chunk: bytes) -> RawFrame | FrameFault:
    """Decode one chunk between delimiters (delimiter excluded) to ``(seq, ack, message)``.

    The link's hot path: one COBS decode and one CRC in C, one header unpack, the payload
    decoder of the type; no :class:`Frame` wrapper.
    """
    size = len(chunk)
    if size > MAX_WIRE_BYTES - 1:
        return FrameFault(FaultKind.OVERSIZE, f"{size} bytes without a delimiter", size)
    try:
        body = _cobs_decode(chunk)
    except cobs.DecodeError as exc:
        return FrameFault(FaultKind.COBS, f"bad COBS: {exc}", size)
    end = len(body) - CRC_BYTES
    if end < HEADER_BYTES:
        return FrameFault(FaultKind.SHORT, f"{end + CRC_BYTES} bytes, need ≥ 8", size)
    crc = body[end] | body[end + 1] << 8
    calc = _crc_hqx(body[:end], 0xFFFF)
    if crc != calc:
        return FrameFault(FaultKind.CRC, f"crc 0x{crc:04x}, computed 0x{calc:04x}", size)
    version, type_code, seq, ack = _HEADER_UNPACK_FROM(body)
    if version != PROTOCOL_VERSION:
        return FrameFault(
            FaultKind.VERSION,
            f"version {version}, this side speaks {PROTOCOL_VERSION}",
            size,
            type_code,
            seq,
            ack,
            version,
        )
    cls = _CLASS_BY_CODE.get(type_code)
    if cls is None:
        return FrameFault(
            FaultKind.UNKNOWN_TYPE, f"type 0x{type_code:02x}", size, type_code, seq, ack
        )
    if (seq != 0) is not cls.SEQUENCED:
        return FrameFault(
            FaultKind.BAD_SEQ,
            f"{cls.TYPE.name} with seq {seq}",
            size,
            type_code,
            seq,
            ack,
        )
    try:
        message = cls.decode_payload(body[HEADER_BYTES:end])
    except WireError as exc:
        return FrameFault(FaultKind.BAD_PAYLOAD, str(exc), size, type_code, seq, ack)
    return seq, ack, message


def decode_body(chunk: bytes) -> Frame | FrameFault:
    """Decode one chunk between delimiters (delimiter excluded)."""
    result = decode_raw(chunk)
    if isinstance(result, FrameFault):
        return result
    seq, ack, message = result
    return Frame(seq=seq, ack=ack, message=message)


def decode_frame(data: bytes) -> Frame:
    """Decode exactly one frame (delimiter optional); raise :class:`WireError` on a fault."""
    chunk = data[:-1] if data.endswith(DELIMITER) else data
    if DELIMITER in chunk:
        raise WireError("decode_frame: more than one frame in the data")
    result = decode_body(chunk)
    if isinstance(result, FrameFault):
        raise WireError(f"bad frame ({result.kind.value}): {result.detail}")
    return result


class FrameDecoder:
    """Streaming decoder: ``feed(chunk)`` returns the frames and faults completed by it.

    Bytes after the last delimiter wait for the next call. A run longer than the largest
    frame is dropped as one OVERSIZE fault, and decoding resumes after the next delimiter.
    Empty chunks (repeated delimiters) are ignored: senders may pad with 0x00.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = 0  # bytes dropped from an oversize run, still waiting for 0x00

    @property
    def pending_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameFault]:
        return [
            r if isinstance(r, FrameFault) else Frame(seq=r[0], ack=r[1], message=r[2])
            for r in self.feed_raw(data)
        ]

    def feed_raw(self, data: bytes) -> list[RawFrame | FrameFault]:
        """As :meth:`feed`, with frames as ``(seq, ack, message)`` tuples (the link's path).

        The chunk is split on 0x00 in one C call and each piece decoded in turn.
        """
        out: list[RawFrame | FrameFault] = []
        if self._buf or self._discarding:
            idx = data.find(0)
            if idx < 0:
                self._keep(data)
                return out
            if self._discarding:
                size = self._discarding + len(self._buf) + idx
                out.append(
                    FrameFault(FaultKind.OVERSIZE, f"{size} bytes without a delimiter", size)
                )
                self._discarding = 0
            else:
                out.append(decode_raw(bytes(self._buf) + data[:idx]))
            self._buf.clear()
            data = data[idx + 1 :]
        pieces = data.split(DELIMITER)
        tail = pieces.pop()
        for piece in pieces:
            if piece:
                out.append(decode_raw(piece))
        if tail:
            self._keep(tail)
        return out

    def _keep(self, tail: bytes) -> None:
        if self._discarding:
            self._discarding += len(tail)
            return
        self._buf += tail
        if len(self._buf) > MAX_WIRE_BYTES - 1:
            self._discarding = len(self._buf)
            self._buf.clear()


_CLASS_BY_CODE: dict[int, type[Message]] = {int(t): cls for t, cls in MESSAGE_CLASSES.items()}
_HEADER_PACK = HEADER.pack
_HEADER_UNPACK_FROM = HEADER.unpack_from
_CRC_PACK = CRC.pack
_crc_hqx = binascii.crc_hqx
_cobs_encode = cobs.encode
_cobs_decode = cobs.decode
