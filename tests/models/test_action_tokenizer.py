import numpy as np
import pytest
import torch

from prismatic.models.action_tokenizer import ActionTokenizer


def test_encode_matches_digitize_semantics():
    tok = ActionTokenizer(vocab_size=32000, n_bins=256)
    edges = np.linspace(-1, 1, 256)
    actions = np.array([-5.0, -1.0, -0.999, 0.0, 0.3, 0.999, 1.0, 7.0])
    expected = 32000 - np.digitize(np.clip(actions, -1, 1), edges)
    np.testing.assert_array_equal(tok.encode(actions), expected)
    # Extremes: -1 sits on the first edge (index 1), +1 on the last (index 256).
    assert tok.encode(np.array([-1.0]))[0] == 31999
    assert tok.encode(np.array([1.0]))[0] == 31744
    assert tok.first_token_id == 31744 and tok.last_token_id == 31999


def test_decode_is_bin_centre_and_folds_edges():
    tok = ActionTokenizer()
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    # token 31919 -> index 81 -> interval 80 (the reference checkpoint's gripper value)
    assert tok.decode(np.array([31919]))[0] == pytest.approx(centres[80])
    assert tok.decode(np.array([31919]))[0] == pytest.approx(-0.3686274509803922)
    # index 256 (token 31744) folds onto the last of the 255 centres; ids past the vocabulary onto the first
    assert tok.decode(np.array([31744]))[0] == pytest.approx(centres[-1])
    assert tok.decode(np.array([32010, 32063]))[0] == pytest.approx(centres[0])
    assert len(tok.bin_centers) == 255


def test_round_trip_error_bounded_by_bin_width():
    rng = np.random.default_rng(0)
    tok = ActionTokenizer()
    actions = rng.uniform(-1, 1, size=(1000, 7))
    decoded = tok.decode(tok.encode(actions))
    assert np.abs(decoded - actions).max() <= 2 / 255 + 1e-12
    assert tok.is_action_token(tok.encode(actions)).all()


def test_torch_and_numpy_decode_agree():
    tok = ActionTokenizer()
    ids = np.arange(31700, 32064)
    np.testing.assert_allclose(tok.decode(torch.from_numpy(ids)).numpy(), tok.decode(ids), atol=1e-7)


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="n_bins"):
        ActionTokenizer(n_bins=1)
    with pytest.raises(ValueError, match="vocab_size"):
        ActionTokenizer(vocab_size=100, n_bins=256)
