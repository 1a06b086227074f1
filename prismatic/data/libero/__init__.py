"""LIBERO training data, as OpenVLA's LIBERO fine-tunes were trained on it.

- `regenerate`: replay the raw LIBERO demos in the simulator at 256 px, dropping no-op steps
  (`is_noop`) and failed replays (needs the `libero` extra);
- `convert`: the regenerated HDF5 files -> an RLDS dataset that the `libero_*_no_noops` specs read.

The commands are `scripts/libero/regenerate_libero_dataset.py` and `scripts/libero/convert_hdf5_to_rlds.py`
(docs/libero.md). The evaluation protocol is in `prismatic.eval.libero`.
"""
