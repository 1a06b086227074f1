"""RLDS data pipeline (tf.data) and its torch adapters.

Kept light on purpose: importing `prismatic.data` must not import TensorFlow, so the model side (and
the serving code) can import from here without it. Import the submodules you need explicitly, e.g.
`from prismatic.data.pipeline import make_dataset` or `from prismatic.data.torch_dataset import RLDSDataset`.
"""

from prismatic.data.errors import DataError

__all__ = ["DataError"]
