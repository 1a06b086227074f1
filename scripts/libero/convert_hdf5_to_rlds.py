"""Convert regenerated LIBERO HDF5 files into an RLDS dataset read by the `libero_*_no_noops` specs.

    python scripts/libero/convert_hdf5_to_rlds.py --hdf5_dir data/libero/libero_spatial_no_noops \
        --data_root data/rlds --name libero_spatial_no_noops

The layout, the options and the conversion: prismatic/data/libero/convert.py (docs/libero.md).
"""

import prismatic  # noqa: F401  (torch before TensorFlow: native-library clash otherwise)
from prismatic.data.libero.convert import main
from prismatic.util.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
