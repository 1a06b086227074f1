"""Wire encodings of numpy arrays, decoded strictly: every byte comes from an untrusted client.

- json-numpy (the original OpenVLA REST protocol): {"__numpy__": base64, "dtype": "<f8", "shape": [7]}.
- msgpack-numpy as openpi packs it: {b"__ndarray__": True, b"data": bytes, b"dtype": str, b"shape": [...]}
  and {b"__npgeneric__": True, b"data": value, b"dtype": str} for numpy scalars.
- msgpack-numpy as vla-eval packs it: the same with str keys, and images as {"__image__": True,
  "format": "png" | "jpeg" | "raw", "data": bytes, "shape": [...]} (PNG by default).

Decoding never unpickles and never allocates more than the message holds: dtypes are limited to bool,
integers and floats, the byte count must equal prod(shape) * itemsize, and compressed images are
checked against `MAX_IMAGE_PIXELS` before they are decompressed. Every failure is a `RequestError`
that names the field and the valid form.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from prismatic.serve.errors import RequestError

ALLOWED_DTYPE_KINDS = "biuf"  # bool, signed and unsigned integers, floats
MAX_IMAGE_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("png", "jpeg", "raw")
JSON_NUMPY_FORM = (
    '{"__numpy__": "<base64 of the C-order bytes>", "dtype": "<dtype str, e.g. |u1>", "shape": [H, W, 3]}'
)


# -- shared checks -----------------------------------------------------------------------------------
def _dtype(value: Any, where: str) -> np.dtype:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        raise RequestError(
            f"{where}: dtype must be a string such as '|u1' or '<f4', got {type(value).__name__}"
        )
    try:
        dtype = np.dtype(value)
    except (TypeError, ValueError):
        raise RequestError(
            f"{where}: unknown dtype {value!r}; use a numpy dtype string such as '|u1' or '<f4'"
        ) from None
    if dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.fields is not None:
        raise RequestError(f"{where}: dtype {value!r} is not allowed; use bool, integer or float dtypes")
    return dtype


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or len(value) > 8:
        raise RequestError(f"{where}: shape must be a list of at most 8 non-negative integers, got {value!r}")
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n < 2**31 for n in value):
        raise RequestError(f"{where}: shape must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def _from_bytes(data: Any, dtype: np.dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    if not isinstance(data, (bytes, bytearray)):
        raise RequestError(f"{where}: data must be raw bytes, got {type(data).__name__}")
    expected = math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise RequestError(
            f"{where}: {len(data)} data bytes do not match shape {list(shape)} of {dtype.str} ({expected} bytes)"
        )
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()


# -- JSON / json-numpy -------------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise RequestError(f"the JSON body contains {name}, which is not valid JSON; send finite numbers", 400)


def _json_numpy_hook(obj: dict) -> Any:
    return decode_json_numpy(obj, "array") if "__numpy__" in obj else obj


def loads_json(body: bytes | str, what: str = "request body", arrays: bool = False) -> Any:
    """Strict JSON: UTF-8, no NaN/Infinity literals. Malformed input is a 400 naming the position.
    arrays=True decodes json-numpy objects (strictly) wherever they appear, as `json_numpy.loads` does."""
    try:
        return json.loads(
            body, parse_constant=_reject_constant, object_hook=_json_numpy_hook if arrays else None
        )
    except RequestError:
        raise
    except json.JSONDecodeError as e:
        raise RequestError(
            f"{what} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})", 400
        ) from None
    except UnicodeDecodeError:
        raise RequestError(f"{what} is not UTF-8 encoded JSON", 400) from None
    except RecursionError:
        raise RequestError(f"{what} is nested too deeply", 400) from None


def decode_json_numpy(obj: Any, where: str) -> np.ndarray:
    """A json-numpy object -> np.ndarray (a writable copy)."""
    if not isinstance(obj, Mapping) or "__numpy__" not in obj:
        raise RequestError(f"{where} must be a json-numpy array {JSON_NUMPY_FORM}, got {describe(obj)}")
    missing = [k for k in ("dtype", "shape") if k not in obj]
    if missing:
        raise RequestError(f"{where}: json-numpy array without {missing}; the form is {JSON_NUMPY_FORM}")
    if not isinstance(obj["__numpy__"], str):
        raise RequestError(f"{where}: '__numpy__' must be a base64 string")
    dtype, shape = _dtype(obj["dtype"], where), _shape(obj["shape"], where)
    try:
        data = base64.b64decode(obj["__numpy__"], validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where}: '__numpy__' is not valid base64") from None
    return _from_bytes(data, dtype, shape, where)


def encode_json_numpy(array: np.ndarray) -> dict[str, Any]:
    """np.ndarray -> the json-numpy object form (what `json_numpy.dumps` writes)."""
    array = np.ascontiguousarray(array)
    return {"__numpy__": base64.b64encode(array.tobytes()).decode("ascii"), "dtype": array.dtype.str,
            "shape": list(array.shape)}  # fmt: skip


# -- msgpack -----------------------------------------------------------------------------------------
def _decode_image(obj: Mapping[str, Any]) -> np.ndarray:
    fmt = obj.get("format")
    if fmt not in IMAGE_FORMATS:
        raise RequestError(f"encoded image: format {fmt!r} is not one of {', '.join(IMAGE_FORMATS)}")
    if fmt == "raw":
        return _from_bytes(obj.get("data"), _dtype(obj.get("dtype"), "raw image"), _shape(obj.get("shape"), "raw image"),
                           "raw image")  # fmt: skip
    from PIL import Image, UnidentifiedImageError

    data = obj.get("data")
    if not isinstance(data, (bytes, bytearray)):
        raise RequestError(f"encoded {fmt} image: data must be bytes, got {type(data).__name__}")
    try:
        with Image.open(io.BytesIO(data), formats=["PNG" if fmt == "png" else "JPEG"]) as img:
            w, h = img.size  # read from the header: nothing is decompressed yet
            if w * h > MAX_IMAGE_PIXELS:
                raise RequestError(
                    f"encoded {fmt} image is {w}x{h}; at most {MAX_IMAGE_PIXELS} pixels are accepted"
                )
            return np.array(img.convert("RGB"))  # as the model's processor treats any PIL mode
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(f"encoded {fmt} image cannot be decoded: {e}") from None


def _object_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:  # openpi
        return _from_bytes(obj.get(b"data"), _dtype(obj.get(b"dtype"), "array"), _shape(obj.get(b"shape"), "array"),
                           "array")  # fmt: skip
    if b"__npgeneric__" in obj:  # openpi numpy scalar
        value = _dtype(obj.get(b"dtype"), "numpy scalar").type(obj.get(b"data"))
        return value
    if "__ndarray__" in obj:  # vla-eval
        return _from_bytes(obj.get("data"), _dtype(obj.get("dtype"), "array"), _shape(obj.get("shape"), "array"),
                           "array")  # fmt: skip
    if "__image__" in obj:  # vla-eval compressed image
        return _decode_image(obj)
    return obj


def unpack_msgpack(data: bytes) -> Any:
    """msgpack bytes (openpi or vla-eval flavour) -> Python objects with numpy arrays; 400 when malformed."""
    import msgpack

    if not isinstance(data, (bytes, bytearray)):
        raise RequestError("expected a binary msgpack message, got a text frame", 400)
    try:
        return msgpack.unpackb(data, raw=False, object_hook=_object_hook, strict_map_key=False)
    except RequestError:
        raise
    except (
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        ValueError,
        TypeError,
        OverflowError,
    ) as e:
        raise RequestError(f"message is not valid msgpack ({type(e).__name__}: {e})", 400) from None


def _openpi_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": np.ascontiguousarray(obj).tobytes(), b"dtype": obj.dtype.str,
                b"shape": list(obj.shape)}  # fmt: skip
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot pack {type(obj).__name__}")


def pack_openpi(obj: Any) -> bytes:
    """Pack as openpi-client's `msgpack_numpy.unpackb` reads it (arrays under bytes keys)."""
    import msgpack

    return msgpack.packb(obj, default=_openpi_default)


def _vlaeval_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": True, "data": np.ascontiguousarray(obj).tobytes(), "dtype": obj.dtype.str,
                "shape": list(obj.shape)}  # fmt: skip
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot pack {type(obj).__name__}")


def pack_vlaeval(obj: Any) -> bytes:
    """Pack as vla-eval's `unpack_message` reads it (arrays under str keys, bin type for bytes)."""
    import msgpack

    return msgpack.packb(obj, default=_vlaeval_default, use_bin_type=True)


def describe(obj: Any) -> str:
    if isinstance(obj, np.ndarray):
        return f"an array of shape {list(obj.shape)} and dtype {obj.dtype}"
    if isinstance(obj, (list, tuple)):
        return f"a list of {len(obj)} items"
    if isinstance(obj, Mapping):
        return f"an object with keys {sorted(map(str, obj))[:8]}"
    return f"{type(obj).__name__} {str(obj)[:40]!r}"
