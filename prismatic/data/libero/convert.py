"""Convert regenerated LIBERO HDF5 files into an RLDS (TFDS) dataset read by the `libero_*_no_noops` specs.

Input: the folder `prismatic.data.libero.regenerate` writes, one `<task>_demo.hdf5` per task, each holding
`data/demo_<i>/{actions, obs/{agentview_rgb, eye_in_hand_rgb, ee_pos, ee_ori, gripper_states,
joint_states}, ...}`. Every demo becomes one episode of `<data_root>/<name>/<version>/`, with the
feature schema of OpenVLA's LIBERO RLDS datasets (`prismatic.data.synthetic._libero_features`):

* `observation/image`, `observation/wrist_image`: `agentview_rgb` and `eye_in_hand_rgb` rotated by 180
  degrees (`img[::-1, ::-1]`), JPEG-encoded. The simulator renders upside down and the regeneration
  stores frames as rendered; OpenVLA's RLDS conversion applied this rotation, and the evaluation
  (`prismatic.eval.libero`) rotates live frames the same way, so training and evaluation frames agree;
* `observation/state`: `concat(ee_pos, ee_ori as axis-angle, gripper_states)`, float32[8];
* `observation/joint_state`: `joint_states`, float32[7];
* `action`: the recorded 7-D `actions` (gripper -1 = open, +1 = close; the dataset spec maps it);
* `language_instruction`: from the file name (`<task>_demo.hdf5`, underscores -> spaces, without the
  upper-case scene prefix of libero_10/libero_90 names such as `KITCHEN_SCENE3_`);
* `reward` / `is_terminal`: 1 / True on the last step only, `discount` 1, `is_first` / `is_last`;
* `episode_metadata/file_path`: the HDF5 file the demo came from.

    python scripts/libero/convert_hdf5_to_rlds.py --hdf5_dir data/libero/libero_spatial_no_noops \
        --data_root data/rlds --name libero_spatial_no_noops      # = prismatic.data.libero.convert.main

Episodes are read from the HDF5 files one at a time while TFDS writes, so only one episode's raw frames
are in memory at once (TFDS itself buffers up to ~1 GB of encoded episodes, then spills to disk).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prismatic.data.errors import DataError
from prismatic.data.libero.regenerate import IMAGE_SIZE
from prismatic.eval.libero import quat2axisangle, rotate_180
from prismatic.util.progress import progress as progress_bar

log = logging.getLogger(__name__)

# dataset path in a demo group -> trailing shape (None: the image size, checked separately)
LAYOUT: dict[str, tuple[int, ...] | None] = {
    "actions": (7,),
    "obs/agentview_rgb": None,
    "obs/eye_in_hand_rgb": None,
    "obs/ee_pos": (3,),
    "obs/ee_ori": (3,),  # axis-angle; a (4,) quaternion (x, y, z, w) is converted
    "obs/gripper_states": (2,),
    "obs/joint_states": (7,),
}
_SCENE_PREFIX = re.compile(r"^(?:[A-Z0-9]+_)*[A-Z][A-Z0-9]*_")  # KITCHEN_SCENE3_, LIVING_ROOM_SCENE2_, ...


def language_from_filename(path: str | Path) -> str:
    """`KITCHEN_SCENE3_put_the_bowl_on_the_plate_demo.hdf5` -> `put the bowl on the plate`."""
    stem = Path(path).name
    stem = stem[: -len(".hdf5")] if stem.endswith(".hdf5") else stem
    stem = stem[: -len("_demo")] if stem.endswith("_demo") else stem
    stem = _SCENE_PREFIX.sub("", stem)
    return stem.replace("_", " ").strip()


def _demo_index(name: str) -> tuple[int, str]:
    m = re.fullmatch(r"demo_(\d+)", name)
    return (int(m.group(1)), name) if m else (sys.maxsize, name)


def _dataset_paths(group: Any) -> list[str]:
    import h5py

    found: list[str] = []
    group.visititems(lambda n, obj: found.append(n) if isinstance(obj, h5py.Dataset) else None)
    return sorted(found)


@dataclass(frozen=True)
class DemoRef:
    path: Path
    demo: str
    language: str
    num_steps: int


def scan(hdf5_dir: str | Path, image_size: int = IMAGE_SIZE) -> list[DemoRef]:
    """Check the layout of every demo (metadata only, no data read) and list them in a stable order."""
    import h5py

    hdf5_dir = Path(hdf5_dir)
    if not hdf5_dir.is_dir():
        raise DataError(f"--hdf5_dir {hdf5_dir} does not exist or is not a folder")
    files = sorted(hdf5_dir.glob("*.hdf5"))
    if not files:
        raise DataError(
            f"no *.hdf5 files in {hdf5_dir}; expected the <task>_demo.hdf5 files written by "
            "scripts/libero/regenerate_libero_dataset.py (prismatic.data.libero.regenerate)"
        )
    refs: list[DemoRef] = []
    for path in files:
        language = language_from_filename(path)
        if not language:
            raise DataError(f"{path}: cannot derive a language instruction from the file name")
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise DataError(f"{path}: no 'data' group; top-level keys present: {sorted(f.keys())}")
            demos = sorted(f["data"].keys(), key=_demo_index)
            if not demos:
                log.warning("%s holds no demos (every replay failed?); skipped", path)
            for demo in demos:
                g = f["data"][demo]
                where = f"{path}: data/{demo}"
                if not isinstance(g, h5py.Group):
                    raise DataError(f"{where} is not a group")
                lengths = set()
                for key, trailing in LAYOUT.items():
                    if key not in g:
                        raise DataError(
                            f"{where} has no '{key}'; datasets present: {_dataset_paths(g)}. Expected the "
                            f"layout prismatic.data.libero.regenerate writes: {', '.join(LAYOUT)}"
                        )
                    shape = g[key].shape
                    expected = (image_size, image_size, 3) if trailing is None else trailing
                    ok = shape[1:] == expected or (key == "obs/ee_ori" and shape[1:] == (4,))
                    if not ok:
                        hint = ""
                        if trailing is None:
                            hint = (
                                f" (raw LIBERO files are 128x128: regenerate them first, or pass "
                                f"--image_size {shape[1] if len(shape) > 1 else '?'} to keep this size)"
                            )
                        raise DataError(
                            f"{where}/{key} has shape {shape}, expected (T, {', '.join(map(str, expected))}){hint}"
                        )
                    lengths.add(shape[0])
                if len(lengths) != 1:
                    sizes = {k: g[k].shape[0] for k in LAYOUT}
                    raise DataError(f"{where}: datasets differ in length: {sizes}")
                (n,) = lengths
                if n == 0:
                    log.warning("%s is empty; skipped", where)
                    continue
                refs.append(DemoRef(path, demo, language, int(n)))
    if not refs:
        raise DataError(f"the *.hdf5 files in {hdf5_dir} hold no non-empty demos")
    return refs


def _axis_angle(ori: np.ndarray) -> np.ndarray:
    return ori if ori.shape[-1] == 3 else np.stack([quat2axisangle(q) for q in ori])


def load_steps(ref: DemoRef) -> list[dict[str, Any]]:
    """One demo as a list of RLDS step dicts (schema of `libero_*_no_noops`)."""
    import h5py

    with h5py.File(ref.path, "r") as f:
        g = f["data"][ref.demo]
        actions = np.asarray(g["actions"][()], np.float32)
        image = rotate_180(np.asarray(g["obs/agentview_rgb"][()], np.uint8))
        wrist = rotate_180(np.asarray(g["obs/eye_in_hand_rgb"][()], np.uint8))
        state = np.concatenate(
            [g["obs/ee_pos"][()], _axis_angle(g["obs/ee_ori"][()]), g["obs/gripper_states"][()]], axis=-1
        ).astype(np.float32)
        joints = np.asarray(g["obs/joint_states"][()], np.float32)
    n = ref.num_steps
    return [
        {
            "observation": {
                "image": image[t],
                "wrist_image": wrist[t],
                "state": state[t],
                "joint_state": joints[t],
            },
            "action": actions[t],
            "discount": 1.0,
            "reward": float(t == n - 1),
            "is_first": t == 0,
            "is_last": t == n - 1,
            "is_terminal": t == n - 1,
            "language_instruction": ref.language,
        }
        for t in range(n)
    ]


class _LazySteps:
    """The steps of one demo, read from the HDF5 file only when TFDS encodes the episode."""

    def __init__(self, ref: DemoRef, progress: Any = None):
        self.ref, self.progress = ref, progress

    def __iter__(self) -> Iterator[dict[str, Any]]:
        steps = load_steps(self.ref)
        if self.progress is not None:
            self.progress.update(1)
        return iter(steps)

    def __repr__(self) -> str:  # TFDS prints the example when encoding fails
        return f"<steps of {self.ref.path}:data/{self.ref.demo} ({self.ref.num_steps} steps)>"


@dataclass(frozen=True)
class Converted:
    path: Path  # <data_root>/<name>/<version>
    episodes: int
    steps: int
    tasks: int

    def __str__(self) -> str:
        return f"wrote {self.path}: {self.episodes} episodes, {self.steps} steps, {self.tasks} tasks"


def convert(
    hdf5_dir: str | Path,
    data_root: str | Path,
    name: str,
    *,
    version: str = "1.0.0",
    image_size: int = IMAGE_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> Converted:
    """Write every demo of `hdf5_dir` as an RLDS episode to `<data_root>/<name>/<version>`."""
    from prismatic.data.synthetic import _libero_features, write_rlds

    target = Path(data_root) / name / version
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; pass --overwrite to replace it")
    refs = scan(hdf5_dir, image_size)
    Path(data_root).mkdir(parents=True, exist_ok=True)
    bar = progress_bar(total=len(refs), desc=f"{name}: episodes", unit="ep", disable=not progress)
    episodes = (
        {"steps": _LazySteps(r, bar), "episode_metadata": {"file_path": str(r.path.resolve())}} for r in refs
    )
    # Build next to the target, then swap it in: a failed run leaves any existing output untouched.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-{version}-", dir=data_root))
    try:
        built = write_rlds(
            staging,
            name,
            _libero_features((image_size, image_size)),
            episodes,
            version=version,
            info_name=name,
        )
        bar.close()
        old = None
        if target.exists():
            old = staging / "replaced"
            target.rename(old)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            built.rename(target)
        except OSError:
            if old is not None:
                old.rename(target)  # put the previous output back
            raise
    finally:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return Converted(target, len(refs), sum(r.num_steps for r in refs), len({r.path for r in refs}))


def main(argv: list[str] | None = None) -> int:
    """The command line of scripts/libero/convert_hdf5_to_rlds.py."""
    p = argparse.ArgumentParser(prog="convert_hdf5_to_rlds.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--hdf5_dir", required=True, type=Path, help="folder of regenerated <task>_demo.hdf5 files"
    )
    p.add_argument(
        "--data_root", required=True, type=Path, help="RLDS root; writes <data_root>/<name>/<version>"
    )
    p.add_argument("--name", required=True, help="dataset name, e.g. libero_spatial_no_noops")
    p.add_argument("--version", default="1.0.0")
    p.add_argument(
        "--image_size", type=int, default=IMAGE_SIZE, help="side of the square images in the files"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing <data_root>/<name>/<version>"
    )
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        done = convert(
            args.hdf5_dir,
            args.data_root,
            args.name,
            version=args.version,
            image_size=args.image_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(done)
    return 0
