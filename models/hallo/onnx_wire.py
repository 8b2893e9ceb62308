"""The few pieces of the ONNX protobuf wire format we need, without the ``onnx`` package (not in the lock).

- ``node_names``: the names of a model file's first graph nodes, read from a memory map (insightface
  looks at them to decide the input normalisation of a recognition model);
- ``tiny_recognition_model``: a small random recognition network (Conv, Flatten, Gemm) in ONNX, for
  tests and ``hallo-tiny`` (onnxruntime runs it like the published ``glintr100.onnx``).

Field numbers are onnx.proto's (ModelProto.graph = 7, GraphProto.node = 1, NodeProto.name = 3, ...).
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _read_varint(data: mmap.mmap | bytes, offset: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if offset >= end:
            raise ValueError("truncated protobuf varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _fields(data: mmap.mmap | bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """`(field number, wire type, offset, size)` of the fields of the message at `[start, end)`;
    for varints, `offset` is the value and `size` 0."""
    out: list[tuple[int, int, int, int]] = []
    offset = start
    while offset < end:
        key, offset = _read_varint(data, offset, end)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, offset = _read_varint(data, offset, end)
            out.append((number, wire, value, 0))
        elif wire == _LENGTH:
            size, offset = _read_varint(data, offset, end)
            if offset + size > end:
                raise ValueError("truncated protobuf field")
            out.append((number, wire, offset, size))
            offset += size
        elif wire in (_FIXED64, _FIXED32):
            offset += 8 if wire == _FIXED64 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def node_names(path: str | Path, limit: int = 8) -> list[str]:
    """Names of the first `limit` nodes of the ONNX model at `path` (read from a memory map).

    Raises:
        ValueError: the file is not an ONNX model (no graph).
    """
    with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        graphs = [
            (o, n) for number, wire, o, n in _fields(data, 0, len(data)) if number == 7 and wire == _LENGTH
        ]
        if not graphs:
            raise ValueError(f"{path} is not an ONNX model (no graph)")
        graph_start, graph_size = graphs[0]
        names: list[str] = []
        for number, wire, offset, size in _fields(data, graph_start, graph_start + graph_size):
            if number != 1 or wire != _LENGTH or len(names) >= limit:
                continue
            found = [
                data[o : o + n].decode()
                for f, w, o, n in _fields(data, offset, offset + size)
                if f == 3 and w == _LENGTH
            ]
            names.append(found[0] if found else "")
        return names


# --- writing -------------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value)


def _bytes(number: int, value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | _LENGTH) + _varint(len(raw)) + raw


def _tensor(name: str, array: npt.NDArray[np.float32]) -> bytes:
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, 1) + _bytes(8, name) + _bytes(9, np.ascontiguousarray(array, "<f4").tobytes())


def _value_info(name: str, dims: list[int | str]) -> bytes:
    shape = b"".join(
        _bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in dims
    )  # TensorShapeProto.dim: dim_value = 1, dim_param = 2
    tensor_type = _int(1, 1) + _bytes(2, shape)  # elem_type FLOAT, shape
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def _node(op: str, inputs: list[str], outputs: list[str], name: str, attributes: bytes = b"") -> bytes:
    body = b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs)
    return body + _bytes(3, name) + _bytes(4, op) + attributes


def _ints_attribute(name: str, values: list[int]) -> bytes:
    return _bytes(5, _bytes(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7))  # INTS


def _int_attribute(name: str, value: int) -> bytes:
    return _bytes(5, _bytes(1, name) + _int(3, value) + _int(20, 2))  # INT


def _float_attribute(name: str, value: float) -> bytes:
    encoded = _varint(2 << 3 | _FIXED32) + struct.pack("<f", value)
    return _bytes(5, _bytes(1, name) + encoded + _int(20, 1))  # FLOAT


def tiny_recognition_model(
    seed: int = 0,
    *,
    embedding_dim: int = 512,
    input_size: int = 112,
    mxnet_style: bool = False,
    input_name: str = "input.1",
    output_name: str = "embedding",
) -> tuple[bytes, dict[str, npt.NDArray[np.float32]]]:
    """A random recognition network: `(N, 3, S, S)` -> Conv 16x16/16 -> Flatten -> Gemm -> `(N, D)`.

    With `mxnet_style`, the graph starts with ``Sub`` and ``Mul`` nodes (x - 127.5) * (1 / 128), as
    insightface's converted MXNet models do (it then feeds raw pixels).

    Returns:
        The serialised ModelProto, and its weights (``conv_w``, ``conv_b``, ``fc_w``, ``fc_b``) so
        that a test can compute the same network.
    """
    rng = np.random.default_rng(seed)
    cells = input_size // 16
    weights = {
        "conv_w": (rng.standard_normal((8, 3, 16, 16)) * 0.05).astype(np.float32),
        "conv_b": (rng.standard_normal(8) * 0.05).astype(np.float32),
        "fc_w": (rng.standard_normal((8 * cells * cells, embedding_dim)) * 0.1).astype(np.float32),
        "fc_b": (rng.standard_normal(embedding_dim) * 0.1).astype(np.float32),
    }
    nodes: list[bytes] = []
    initializers = [_tensor(name, array) for name, array in weights.items()]
    source = input_name
    if mxnet_style:
        initializers += [
            _tensor("mean", np.array(127.5, np.float32)),
            _tensor("scale", np.array(1 / 128, np.float32)),
        ]
        nodes += [
            _node("Sub", [input_name, "mean"], ["centred"], "_minusscalar0"),
            _node("Mul", ["centred", "scale"], ["scaled"], "_mulscalar0"),
        ]
        source = "scaled"
    nodes += [
        _node(
            "Conv",
            [source, "conv_w", "conv_b"],
            ["features"],
            "Conv_0",
            _ints_attribute("kernel_shape", [16, 16]) + _ints_attribute("strides", [16, 16]),
        ),
        _node("Flatten", ["features"], ["flat"], "Flatten_1", _int_attribute("axis", 1)),
        _node(
            "Gemm",
            ["flat", "fc_w", "fc_b"],
            [output_name],
            "Gemm_2",
            _float_attribute("alpha", 1.0) + _float_attribute("beta", 1.0),
        ),
    ]
    graph = (
        b"".join(_bytes(1, node) for node in nodes)
        + _bytes(2, "recognition")
        + b"".join(_bytes(5, tensor) for tensor in initializers)
        + _bytes(11, _value_info(input_name, ["None", 3, input_size, input_size]))
        + _bytes(12, _value_info(output_name, ["None", embedding_dim]))
    )
    opset = _bytes(1, "") + _int(2, 13)
    model = _int(1, 8) + _bytes(2, "parla-tests") + _bytes(7, graph) + _bytes(8, opset)
    return model, weights
