"""Wire encodings against the protocols' own libraries (json-numpy, openpi-client's msgpack_numpy,
vla-eval's message codec), in both directions, and strict rejection of malformed or hostile input."""

from __future__ import annotations

import base64
import io
import json

import json_numpy
import numpy as np
import pytest
from openpi_client import msgpack_numpy as openpi_msgpack
from PIL import Image
from vla_eval.protocol import messages as vlaeval_messages
from vla_eval.protocol import numpy_codec as vlaeval_codec

from prismatic.serve.codec import (
    MAX_IMAGE_PIXELS,
    decode_json_numpy,
    encode_json_numpy,
    loads_json,
    pack_openpi,
    pack_vlaeval,
    unpack_msgpack,
)
from prismatic.serve.errors import RequestError

ARRAYS = [
    np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3),
    np.linspace(-1, 1, 7),
    np.array([1.5, -2.25], dtype=np.float32),
    np.array([True, False]),
    np.zeros((0, 4), dtype=np.int16),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_json_numpy_round_trips_with_the_package(array):
    ours = decode_json_numpy(json.loads(json_numpy.dumps(array)), "x")
    assert ours.dtype == array.dtype and ours.shape == array.shape and np.array_equal(ours, array)
    theirs = json_numpy.loads(json.dumps(encode_json_numpy(array)))
    assert np.array_equal(np.asarray(theirs), array) and np.asarray(theirs).dtype == array.dtype
    # decoded arrays are writable copies (the model side may normalise in place)
    assert ours.flags.writeable


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"__numpy__": "AAAA", "dtype": "|O", "shape": [3]}, "not allowed"),
        ({"__numpy__": "AAAA", "dtype": "<f8", "shape": [3]}, "do not match shape"),
        ({"__numpy__": "!!!!", "dtype": "|u1", "shape": [3]}, "base64"),
        ({"__numpy__": "AAAA", "dtype": "nope", "shape": [3]}, "unknown dtype"),
        ({"__numpy__": "AAAA", "dtype": "|u1", "shape": [-3]}, "non-negative"),
        ({"__numpy__": "AAAA", "dtype": "|u1"}, "without ['shape']"),
        ({"__numpy__": "AAAA", "dtype": [["a", "<f4"]], "shape": [1]}, "dtype must be a string"),
        ([1, 2, 3], "json-numpy array"),
    ],
)
def test_json_numpy_rejects_malformed_arrays(obj, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_json_numpy(obj, "image")


def test_strict_json():
    assert loads_json(b'{"a": 1}') == {"a": 1}
    for body, message in [
        (b'{"a": NaN}', "NaN"),
        (b'{"a": -Infinity}', "Infinity"),
        (b"{oops", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON|UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ]:
        with pytest.raises(RequestError, match=message) as info:
            loads_json(body)
        assert info.value.status == 400
    nested = loads_json(json_numpy.dumps({"x": {"y": ARRAYS[0]}}), arrays=True)
    assert np.array_equal(nested["x"]["y"], ARRAYS[0])


def test_openpi_msgpack_both_directions():
    obs = {"observation/image": ARRAYS[0], "observation/state": ARRAYS[1], "prompt": "pick", "n": np.int64(3)}
    decoded = unpack_msgpack(openpi_msgpack.packb(obs))
    assert decoded["prompt"] == "pick" and decoded["n"] == 3 and isinstance(decoded["n"], np.int64)
    for key in ("observation/image", "observation/state"):
        assert np.array_equal(decoded[key], obs[key]) and decoded[key].dtype == obs[key].dtype
    reply = openpi_msgpack.unpackb(pack_openpi({"actions": np.ones((1, 7)), "timing": {"infer_ms": 1.5}}))
    assert np.array_equal(reply["actions"], np.ones((1, 7))) and reply["timing"] == {"infer_ms": 1.5}


@pytest.mark.parametrize("image_format", ["raw", "png", "jpeg"])
def test_vlaeval_messages_both_directions(image_format, monkeypatch):
    monkeypatch.setattr(vlaeval_codec, "_image_format", image_format)
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    message = vlaeval_messages.Message(
        vlaeval_messages.MessageType.OBSERVATION,
        {"images": {"agentview": image}, "task_description": "pick", "states": np.arange(8.0)},
        seq=5,
    )
    raw = unpack_msgpack(vlaeval_messages.pack_message(message))
    assert raw["type"] == "observation" and raw["seq"] == 5
    got = raw["payload"]["images"]["agentview"]
    assert got.shape == image.shape and got.dtype == np.uint8
    if image_format != "jpeg":  # lossless
        assert np.array_equal(got, image)
    assert np.array_equal(raw["payload"]["states"], np.arange(8.0))
    back = vlaeval_messages.unpack_message(
        pack_vlaeval({"type": "action", "payload": {"actions": np.arange(7.0)}, "seq": 5, "timestamp": 0.0})
    )
    assert back.type == vlaeval_messages.MessageType.ACTION and back.seq == 5
    assert np.array_equal(back.payload["actions"], np.arange(7.0))


def test_msgpack_rejects_malformed_and_hostile_input():
    bad = [
        (b"\xc1", "not valid msgpack"),  # reserved byte
        (b"\x92\x01", "not valid msgpack"),  # truncated array
        ("text", "binary msgpack"),
    ]
    for data, message in bad:
        with pytest.raises(RequestError, match=message):
            unpack_msgpack(data)
    import msgpack

    wrong_size = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 5, b"dtype": "<f8", b"shape": [3]})
    with pytest.raises(RequestError, match="do not match shape"):
        unpack_msgpack(wrong_size)
    pickled = msgpack.packb({b"__ndarray__": True, b"data": b"\x00" * 8, b"dtype": "|O", b"shape": [1]})
    with pytest.raises(RequestError, match="not allowed"):
        unpack_msgpack(pickled)


def test_compressed_image_bomb_is_refused_before_decoding():
    # a PNG whose header claims 5000x5000 pixels, built cheaply as a 1-bit image
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, format="PNG")
    assert 5000 * 5000 > MAX_IMAGE_PIXELS
    import msgpack

    data = msgpack.packb(
        {"__image__": True, "format": "png", "data": buf.getvalue(), "shape": [5000, 5000, 3]}
    )
    with pytest.raises(RequestError, match="at most"):
        unpack_msgpack(data)
    not_png = msgpack.packb({"__image__": True, "format": "png", "data": base64.b64encode(b"x" * 40)})
    with pytest.raises(RequestError, match="cannot be decoded"):
        unpack_msgpack(not_png)
