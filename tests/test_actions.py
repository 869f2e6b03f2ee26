import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hf_agents import actions as A

button_ids = arrays(np.int64, (5, 12), elements=st.integers(0, 1))
stick_ids = arrays(np.int64, (5, 4), elements=st.integers(0, 10))


@given(button_ids, stick_ids)
def test_ids_continuous_ids_round_trip(b, s):
    ids = np.concatenate([b, s], 1)
    cont = A.ids_to_continuous(ids)
    assert cont.dtype == np.float32
    np.testing.assert_array_equal(A.continuous_to_ids(cont), ids)
    # torch gives the same
    np.testing.assert_array_equal(A.continuous_to_ids(torch.from_numpy(cont)).numpy(), ids)


@given(button_ids, stick_ids)
def test_tokens_round_trip_and_range(b, s):
    ids = np.concatenate([b, s], 1)
    tokens = A.ids_to_tokens(ids)
    assert tokens.min() >= 0 and tokens.max() < A.VOCAB_SIZE == 68
    np.testing.assert_array_equal(A.tokens_to_ids(tokens), ids)
    t = A.ids_to_tokens(torch.from_numpy(ids))
    np.testing.assert_array_equal(t.numpy(), tokens)


@given(arrays(np.float64, (7, 4), elements=st.floats(-1, 1)))
def test_sticks_encode_to_nearest_centre(sticks):
    cont = np.concatenate([np.zeros((7, 12)), sticks], 1)
    ids = A.continuous_to_ids(cont)[:, 12:]
    dist = np.abs(sticks[..., None] - A.STICK_CENTRES.astype(np.float64))
    chosen = np.take_along_axis(dist, ids[..., None], -1)[..., 0]
    assert np.all(chosen <= dist.min(-1) + 1e-6)


def test_recorded_values_survive_bit_for_bit():
    rec = np.zeros((11, 16), np.float32)
    rec[:, 12:] = A.STICK_CENTRES[:, None]
    rec[::2, :12] = 1
    np.testing.assert_array_equal(A.ids_to_continuous(A.continuous_to_ids(rec)), rec)


def test_noop_detection_numpy_and_torch():
    ids = np.tile(A.NOOP_IDS, (3, 1))
    ids[1, 0] = 1
    ids[2, 13] = 4
    assert A.is_noop(ids).tolist() == [True, False, False]
    assert A.is_noop(torch.from_numpy(ids)).tolist() == [True, False, False]
    assert A.is_noop(A.continuous_to_ids(np.r_[np.zeros(12), np.zeros(4)][None]))[0]


def test_space_matches_contract():
    space = A.action_space()
    assert space.nvec.tolist() == [2] * 12 + [11] * 4
    assert space.contains(A.NOOP_IDS)


@pytest.mark.parametrize(
    "bad,name",
    [((0, 1.5), "a"), ((3, 0.5), "y"), ((12, 1.2), "left_x"), ((15, float("nan")), "right_y"), ((14, -1.01), "right_x")],
)
def test_outside_contract_names_component(bad, name):
    x = np.zeros((2, 16))
    x[1, bad[0]] = bad[1]
    with pytest.raises(A.ActionError, match=f"'{name}'"):
        A.continuous_to_ids(x)


def test_bad_ids_and_shapes():
    with pytest.raises(A.ActionError, match="left_y"):
        A.validate_ids(np.r_[np.zeros(12, int), [5, 11, 5, 5]])
    with pytest.raises(A.ActionError, match="last dimension"):
        A.continuous_to_ids(np.zeros((3, 15)))
