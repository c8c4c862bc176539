"""The Forsun service on the wire: message boundaries, encoding and the method table.

Old forsun clients send strict binary messages with no frame around them, so a reader has to
parse a message to know where it ends. The C decoder cannot be trusted to do that on a cut
buffer (it may raise TypeError instead of EOFError), so ``MessageScanner`` walks the message
with the pure-Python protocol, where only EOFError means "incomplete"; the exact slice is then
decoded with the C protocol. The server and the Tornado client share this module.
"""

import operator
import struct
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Type, Union

from thrift.Thrift import TMessageType, TType
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
    # The server's fast path (see read_messages and encode_reply):
    #: args struct -> the tuple of its fields in the IDL's order (one C call)
    arguments: Callable[[Any], tuple] = tuple
    #: an args_cls subclass that a decoder fills without running the generated __init__
    decoded_cls: Optional[type] = None
    #: the REPLY message header up to the seqid
    reply_header: bytes = b""
    #: [result_cls, (success field spec,)]: encode_binary of an object whose ``success``
    #: is the returned value gives the whole result struct; None for a void method
    reply_spec: Optional[list] = None


class _FreshDefault:
    """A class attribute standing for a mutable IDL default (``params = {}``): an instance
    whose decoder did not set the field gets a new copy, never a shared one."""

    def __init__(self, value: Any):
        self.value = value

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        return self.value.copy()


def _decoded_class(args_cls: type) -> type:
    """``args_cls`` with the IDL defaults as class attributes and no ``__init__``: creating
    one costs no Python call, and the fields the decoder does not set (absent from the
    message) read as their defaults, as with the generated ``__init__``."""
    namespace: Dict[str, Any] = {"__init__": object.__init__, "__module__": __name__}
    for spec in args_cls.thrift_spec:
        if spec:
            default = spec[4]
            if isinstance(default, (dict, list, set)):
                default = _FreshDefault(default)
            namespace[spec[2]] = default
    return type(args_cls.__name__, (args_cls,), namespace)


def _argument_getter(names: Tuple[str, ...]) -> Callable[[Any], tuple]:
    if not names:
        return lambda args: ()
    if len(names) == 1:
        getter = operator.attrgetter(names[0])
        return lambda args: (getter(args),)
    return operator.attrgetter(*names)


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
        success = next((spec for spec in result_fields if spec[0] == 0), None)
        arg_names = tuple(spec[2] for spec in args_cls.thrift_spec if spec)
        encoded = name.encode("utf-8")
        methods[name] = Method(
            args_cls, result_cls,
            arg_names=arg_names,
            returns=success is not None,
            error_field=error_field,
            arguments=_argument_getter(arg_names),
            decoded_cls=_decoded_class(args_cls),
            reply_header=_I32_U32.pack(_VERSION_1 | TMessageType.REPLY, len(encoded)) + encoded,
            reply_spec=None if success is None else [result_cls, (success,)])
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


# name as it appears on the wire -> (name, method, its decoded_cls, decode_binary's spec).
_WIRE_NAMES = {name.encode("utf-8"): (name, method, method.decoded_cls,
                                      [method.args_cls, method.args_cls.thrift_spec])
               for name, method in METHODS.items()}


class _DecodeInput:
    """What ``fastbinary.decode_binary`` reads through, as the protocol and transport it is
    usually given, but with plain attributes: TMemoryBuffer's ``cstringio_buf`` is a
    property, a Python call per decode."""

    __slots__ = ("trans", "string_length_limit", "container_length_limit", "cstringio_buf")

    def __init__(self, buffer: Any, protocol: TBinaryProtocol):
        self.trans = self
        self.string_length_limit = protocol.string_length_limit
        self.container_length_limit = protocol.container_length_limit
        self.cstringio_buf = buffer

    @staticmethod
    def cstringio_refill(partialread: bytes, reqlen: int) -> Any:
        raise EOFError()  # the whole input is in the buffer: it ends here


def read_messages(data: bytes, transport: TMemoryBuffer, protocol: TBinaryProtocol,
                  calls: Any) -> int:
    """Decodes every whole strict message ``data`` starts with into ``calls`` (appending
    ``(name, type, seqid, method or None, args or None)`` tuples), like
    :func:`read_message_at` in a loop; returns the bytes consumed. It stops at the first
    message that does not decode (incomplete or invalid: the caller's
    :class:`MessageScanner` decides). ``transport`` is a TMemoryBuffer over ``data`` and
    ``protocol`` a C protocol reading it."""
    position = transport._buffer  # the BytesIO the C decoder reads from
    source = _DecodeInput(position, protocol)
    seek, tell, append = position.seek, position.tell, calls.append
    decode = fastbinary.decode_binary
    header = _I32_U32.unpack_from
    names = _WIRE_NAMES
    end = len(data)
    limit = protocol.string_length_limit
    consumed = 0
    while consumed + 12 <= end:
        version, size = header(data, consumed)
        start = consumed + 8 + size
        if version & _VERSION_MASK != _VERSION_1 or size > limit or start + 4 > end:
            break
        known = names.get(data[consumed + 8:start])
        if known is None:  # an unknown method (or a name not in UTF-8): the slow way
            try:
                call = read_message_at(data, consumed, transport, protocol)
            except Exception:
                break
        else:
            name, method, decoded_cls, spec = known
            seqid, = _I32.unpack_from(data, start)
            seek(start + 4)
            args = decoded_cls()
            try:
                decode(args, source, spec)
            except Exception:
                break
            call = (name, version & 0xff, seqid, method, args)
        consumed = tell()
        append(call)
    return consumed


class _Reply:
    """Holds a returned value for :func:`encode_reply` (the one result field it encodes)."""

    __slots__ = ("success",)

    def __init__(self, success: Any):
        self.success = success


def encode_reply(name: str, method: Method, seqid: int, value: Any) -> bytes:
    """The REPLY message of a successful call: what :func:`encode_message` writes for
    ``method.result_cls(success=value)``, without building one. A returned struct may be
    any object with the struct's attributes (the handler returns plans as they are)."""
    spec = method.reply_spec
    if fastbinary is None:  # pragma: no cover - the PyPI wheel has it
        result = method.result_cls()
        if spec is not None:
            result.success = value
        return encode_message(name, TMessageType.REPLY, seqid, result)
    if spec is None:  # a void method: an empty result struct
        return method.reply_header + _I32.pack(seqid) + b"\x00"
    return method.reply_header + _I32.pack(seqid) + fastbinary.encode_binary(_Reply(value), spec)


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
