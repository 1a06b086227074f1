"""Independent numpy re-computation of what the pipeline should produce from the raw synthetic values."""

from __future__ import annotations

import numpy as np


def bridge_actions(ep) -> np.ndarray:
    """Drop the first step; movement = reached-state deltas; keep the (binary) gripper; drop the last."""
    state = np.stack([s["observation"]["state"] for s in ep["steps"]])[1:]
    raw = np.stack([s["action"] for s in ep["steps"]])[1:]
    grip = np.where(raw[:, 6] > 0.95, 1.0, 0.0)  # synthetic bridge grippers are exactly 0/1
    return np.concatenate([state[1:, :6] - state[:-1, :6], grip[:-1, None]], axis=1).astype(np.float32)


def libero_actions(ep) -> np.ndarray:
    raw = np.stack([s["action"] for s in ep["steps"]])
    return np.concatenate([raw[:, :6], 1 - np.clip(raw[:, 6:], 0, 1)], axis=1).astype(np.float32)


def rel2abs(g: np.ndarray) -> np.ndarray:
    """Relative gripper (+1 close, -1 open, 0 keep) -> absolute (1 open, 0 closed), carried forward."""
    th = np.where(g < -0.1, 1, np.where(g > 0.1, -1, 0))
    nz = np.flatnonzero(th)
    state = -th[nz[0]] if len(nz) else 1  # before the first command: the opposite of it (open if none)
    out = []
    for v in th:
        state = v if v != 0 else state
        out.append(state / 2 + 0.5)
    return np.asarray(out, np.float32)


def fractal_actions(ep) -> np.ndarray:
    a = [s["action"] for s in ep["steps"]]
    wv = np.stack([x["world_vector"] for x in a])
    rd = np.stack([x["rotation_delta"] for x in a])
    g = np.stack([x["gripper_closedness_action"][0] for x in a])
    return np.concatenate([wv, rd, rel2abs(g)[:, None]], axis=1).astype(np.float32)


ACTIONS = {
    "bridge_orig": bridge_actions,
    "libero_spatial_no_noops": libero_actions,
    "fractal20220817_data": fractal_actions,
}


def stats(x: np.ndarray) -> dict:
    return {
        "mean": x.mean(0),
        "std": x.std(0),
        "min": x.min(0),
        "max": x.max(0),
        "q01": np.quantile(x, 0.01, axis=0),
        "q99": np.quantile(x, 0.99, axis=0),
    }


def normalize_q99(x: np.ndarray, s: dict, mask=(True,) * 6 + (False,)) -> np.ndarray:
    mask = np.asarray(mask)
    y = np.clip(2 * (x - s["q01"]) / (s["q99"] - s["q01"] + 1e-8) - 1, -1, 1)
    y = np.where(mask, y, x)
    return np.where(s["min"] == s["max"], 0.0, y)


def all_actions(name: str, episodes) -> np.ndarray:
    return np.concatenate([ACTIONS[name](ep) for ep in episodes])
