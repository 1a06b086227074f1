"""Regenerate LIBERO demonstrations the way OpenVLA's LIBERO fine-tuning data was made (256 px replays,
no-op steps and failed replays dropped); needs the `libero` extra and the raw LIBERO HDF5 files.

    python scripts/libero/regenerate_libero_dataset.py --libero_task_suite libero_spatial \
        --libero_raw_data_dir data/libero/libero_spatial --libero_target_dir data/libero/libero_spatial_no_noops

The no-op rule, the replay and the output layout: prismatic/data/libero/regenerate.py (docs/libero.md).
"""


from prismatic.data.libero.regenerate import main
from prismatic.util.cli import run_cli

if __name__ == "__main__":
    run_cli(main)
