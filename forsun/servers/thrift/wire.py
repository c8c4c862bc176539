"""The Forsun service on the wire: message boundaries, encoding and the method table.

Old forsun clients send strict binary messages with no frame around them, so a reader has to
parse a message to know where it ends. The C decoder cannot be trusted to do that on a cut
buffer (it may raise TypeError instead of EOFError), so ``MessageScanner`` walks the message
with the pure-Python protocol, where only EOFError means "incomplete"; the exact slice is then
decoded with the C protocol. The server and the Tornado client share this module.
"""

import struct
from typing import Any, Dict, List, NamedTuple, Optional, Tuple, Type, Union

from thrift.Thrift import TType
from thrift.protocol.TBinaryProtocol import TBinaryProtocol, TBinaryProtocolAccelerated
from thrift.protocol.TProtocol import TProtocolException
from thrift.transport.TTransport import TMemoryBuffer, TTransportBase, TTransportException

from forsun.thriftapi import Forsun, ttypes

try:
    from thrift.protocol import fastbinary
except ImportError:  # pragma: no cover - the PyPI wheel has it
    fastbinary = None

STRICT_VERSION_PREFIX = b"\x80\x01"
_VERSION_1 = -0x7FFF0000  # 0x80010000 as a signed i32
_VERSION_MASK = -0x10000  # 0xFFFF0000
_I32 = struct.Struct("!i")
_I32_U32 = struct.Struct("!iI")
_HEADERS: Dict[Tuple[str, int], bytes] = {}
MAX_DEPTH = 64

# Scanner frames: reading the fields of a struct, the items of a container, or one value.
_FIELDS = 0
_ITEMS = 1
_VALUE = 2

_PRIMITIVE_READS = {
    TType.BOOL: "readBool",
    TType.BYTE: "readByte",
    TType.I16: "readI16",
    TType.I32: "readI32",
    TType.I64: "readI64",
    TType.DOUBLE: "readDouble",
    TType.STRING: "readBinary",
    TType.UUID: "readUuid",
}


class Method(NamedTuple):
    """What the generated code knows about one service method, for a generic dispatcher."""

    args_cls: type
    result_cls: type
    arg_names: Tuple[str, ...]
    returns: bool
    error_field: Optional[str]


def _service_methods() -> Dict[str, Method]:
    methods = {}
    for name in vars(Forsun.Iface):
        if name.startswith("_"):
            continue
        args_cls = getattr(Forsun, name + "_args")
        result_cls = getattr(Forsun, name + "_result")
        result_fields = [spec for spec in result_cls.thrift_spec if spec]
        error_field = next((spec[2] for spec in result_fields
                            if spec[0] > 0 and spec[3][0] is ttypes.ForsunPlanError), None)
        methods[name] = Method(
            args_cls, result_cls,
            arg_names=tuple(spec[2] for spec in args_cls.thrift_spec if spec),
            returns=any(spec[0] == 0 for spec in result_fields),
            error_field=error_field)
    return methods


METHODS = _service_methods()


def binary_protocol(trans: TTransportBase, max_message_bytes: int,
                    cls: Type[TBinaryProtocol] = TBinaryProtocolAccelerated) -> TBinaryProtocol:
    """A strict binary protocol whose length limits keep a hostile peer from making us allocate
    more than one message may hold (each container item takes at least one byte)."""
    return cls(trans, strictRead=True, string_length_limit=max_message_bytes,
               container_length_limit=max_message_bytes)


def decoding_protocol(message: bytes, max_message_bytes: int) -> TBinaryProtocol:
    """The C protocol on a fresh buffer holding exactly one complete message."""
    return binary_protocol(TMemoryBuffer(message), max_message_bytes)


def encode_message(name: str, mtype: int, seqid: int, body) -> bytes:
    spec = getattr(body, "thrift_spec", None)
    if spec is not None and fastbinary is not None:  # generated structs: one C call
        header = _HEADERS.get((name, mtype))
        if header is None:
            encoded = name.encode("utf-8")
            header = _HEADERS[(name, mtype)] = _I32_U32.pack(
                _VERSION_1 | mtype, len(encoded)) + encoded
        return header + _I32.pack(seqid) + fastbinary.encode_binary(body, [body.__class__, spec])
    buffer = TMemoryBuffer()
    protocol = TBinaryProtocolAccelerated(buffer)
    protocol.writeMessageBegin(name, mtype, seqid)
    body.write(protocol)
    protocol.writeMessageEnd()
    return buffer.getvalue()


def read_message_at(data: bytes, pos: int, transport: TMemoryBuffer,
                    protocol: TBinaryProtocol) -> Tuple[str, int, int, Optional[Method], Any]:
    """Decodes the strict message at ``data[pos:]``; ``transport`` is a TMemoryBuffer over
    ``data`` and ``protocol`` a C protocol reading it. Afterwards the transport's position is
    the message's end. Raises on anything but a whole valid message (the caller then lets
    the :class:`MessageScanner` decide whether it is incomplete or invalid)."""
    version, size = _I32_U32.unpack_from(data, pos)
    if version & _VERSION_MASK != _VERSION_1:
        raise TProtocolException(TProtocolException.BAD_VERSION, "not a strict message")
    start = pos + 8 + size
    if size > protocol.string_length_limit or start + 4 > len(data):
        raise EOFError()
    name = data[pos + 8:start].decode("utf-8")
    seqid, = _I32.unpack_from(data, start)
    transport._buffer.seek(start + 4)
    method = METHODS.get(name)
    args = None
    if method is not None:
        args = method.args_cls()
        fastbinary.decode_binary(args, protocol, [method.args_cls, args.thrift_spec])
    else:
        protocol.skip(TType.STRUCT)
    return name, version & 0xff, seqid, method, args


class _BufferReader(TTransportBase):
    """Reads a growing bytearray from an offset and remembers how far a failed read reached,
    so the scanner knows how many bytes to wait for before it tries again."""

    def __init__(self, data: bytearray, pos: int):
        self.data = data
        self.pos = pos
        self.needed = 0

    def readAll(self, sz: int) -> bytes:
        end = self.pos + sz
        if end > len(self.data):
            self.needed = end
            raise EOFError()
        chunk = bytes(self.data[self.pos:end])
        self.pos = end
        return chunk


class MessageScanner:
    """Finds where the message at the start of a buffer ends, resuming where it left off.

    The buffer must keep starting at the same message and only grow between calls. A try
    resumes after the last complete value and only once the bytes the last try ran out on have
    arrived, so a large message arriving in many chunks is walked once in total.
    """

    def __init__(self, max_message_bytes: int):
        self.max_message_bytes = max_message_bytes
        self._reset()

    def _reset(self) -> None:
        self._pos = 0
        self._needed = 0
        self._stack: Optional[List[Union[tuple, list]]] = None

    def scan(self, data: bytearray) -> int:
        """Returns the length of the first message of ``data``, or 0 while it is incomplete.

        Bytes that cannot be a message raise (TProtocolException, TTransportException,
        UnicodeDecodeError...); so does a message longer than ``max_message_bytes``.
        """
        if len(data) < self._needed:
            return 0
        reader = _BufferReader(data, self._pos)
        protocol = binary_protocol(reader, self.max_message_bytes, TBinaryProtocol)
        try:
            if self._stack is None:
                protocol.readMessageBegin()
                self._stack = [(_FIELDS,)]
                self._pos = reader.pos
            while self._stack:
                _step(protocol, self._stack)
                self._pos = reader.pos
        except EOFError:
            self._needed = reader.needed
            self._check_size(max(self._needed, len(data)))
            return 0
        end = self._pos
        self._reset()
        self._check_size(end)
        return end

    def _check_size(self, size: int) -> None:
        if size > self.max_message_bytes:
            raise TTransportException(TTransportException.SIZE_LIMIT,
                                      "message over %d bytes" % self.max_message_bytes)


def _step(protocol: TBinaryProtocol, stack: list) -> None:
    """Reads one header or value and updates ``stack`` only after the read succeeded, so an
    EOFError leaves the state as it was before the step."""
    frame = stack[-1]
    kind = frame[0]
    if kind == _FIELDS:
        _, ftype, _ = protocol.readFieldBegin()
        if ftype == TType.STOP:
            stack.pop()
        else:
            stack.append((_VALUE, ftype))
    elif kind == _ITEMS:
        _, types, left = frame
        if left:
            frame[2] = left - 1
            stack.append((_VALUE, types[left % len(types)]))
        else:
            stack.pop()
    else:
        ttype = frame[1]
        if ttype == TType.STRUCT:
            stack[-1] = (_FIELDS,)
        elif ttype == TType.MAP:
            ktype, vtype, size = protocol.readMapBegin()
            # Keys are read when ``left`` is even (2 * size first), values when it is odd.
            stack[-1] = [_ITEMS, (ktype, vtype), 2 * size]
        elif ttype in (TType.LIST, TType.SET):
            etype, size = protocol.readListBegin()
            stack[-1] = [_ITEMS, (etype,), size]
        elif ttype in _PRIMITIVE_READS:
            getattr(protocol, _PRIMITIVE_READS[ttype])()
            stack.pop()
        else:
            raise TProtocolException(TProtocolException.INVALID_DATA,
                                     "unknown field type %d" % ttype)
    if len(stack) > MAX_DEPTH:
        raise TProtocolException(TProtocolException.DEPTH_LIMIT, "nested too deep")
