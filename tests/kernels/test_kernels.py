"""Every kernel's fast CPU path and Triton version (interpreted on the CPU) against its reference."""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # read when a kernel is first compiled

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import active_attention, bucketed_selection, exit_rule
from services.earlyexit.backends.torch_model import EncoderLayer, key_bias_from_mask
from services.experience.core.orchestrate import Bucketing, mmr, similarity_top_k
from tests.rose_reference import rose

pytestmark = pytest.mark.skipif(
    os.environ["TRITON_INTERPRET"] != "1", reason="Triton kernels run on this CPU only when interpreted"
)


@st.composite
def pools(draw):
    """Small pools on coarse grids, so that exact similarity ties and empty buckets are common."""
    n = draw(st.integers(1, 40))
    dimension = draw(st.integers(1, 5))
    grid = st.integers(-2, 2)
    vectors = np.array(draw(st.lists(st.lists(grid, min_size=dimension, max_size=dimension), min_size=n, max_size=n)))
    query = np.array(draw(st.lists(grid, min_size=dimension, max_size=dimension)))
    uncertainty = np.array(draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))) / 4
    complexity = np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), dtype=np.float64)
    keys = np.array(draw(st.lists(st.integers(0, 2**62), min_size=n, max_size=n, unique=True)), dtype=np.int64)
    k = draw(st.integers(1, 9))
    ratio = draw(st.sampled_from([1.0, 1.2, 3.0]))
    equal_count = draw(st.booleans())
    return vectors.astype(np.float32), query.astype(np.float32), uncertainty, complexity, keys, k, ratio, equal_count


@settings(max_examples=150, deadline=None)
@given(pools())
def test_selection_reference_and_fast_path_equal_the_services_exact_rose(pool) -> None:
    vectors, query, uncertainty, complexity, keys, k, ratio, equal_count = pool
    bucketing = Bucketing.EQUAL_COUNT if equal_count else Bucketing.EQUAL_WIDTH
    reference = bucketed_selection.reference(*pool)
    exact = [p.index for p in rose(reference.similarity, uncertainty, complexity, keys, k, ratio, bucketing)]
    assert reference.picks.tolist() == exact
    fast = bucketed_selection.fast_cpu(*pool)
    np.testing.assert_allclose(fast.similarity, reference.similarity, atol=1e-5)
    # Exact against the reference given the same similarity the fast path built its buckets from.
    expected = bucketed_selection.select_reference(fast.similarity, uncertainty, complexity, keys, k, ratio, equal_count)
    assert fast.picks.tolist() == expected.tolist()


@settings(max_examples=150, deadline=None)
@given(pools())
def test_selection_from_int16_codes_picks_what_the_float32_path_picks(pool) -> None:
    vectors, query, uncertainty, complexity, keys, k, ratio, equal_count = pool
    fast = bucketed_selection.fast_cpu(*pool)
    rows = bucketed_selection.compact(vectors)
    result = bucketed_selection.fast_cpu_compact(vectors, rows, query, uncertainty, complexity, keys, k, ratio, equal_count)
    assert result.picks.tolist() == fast.picks.tolist()
    assert np.array_equal(result.similarity[result.picks], fast.similarity[fast.picks])
    assert (np.abs(result.similarity - fast.similarity) <= rows.bounds * np.linalg.norm(query) + 1e-7).all()


@settings(max_examples=150, deadline=None)
@given(pools())
def test_top_k_from_int16_codes_keeps_every_row_that_can_be_in_it(pool) -> None:
    vectors, query, _, _, keys, k, _, _ = pool
    similarity = bucketed_selection.fast_cpu(*pool).similarity
    rows, candidates = bucketed_selection.top_candidates_compact(vectors, bucketed_selection.compact(vectors), query, k)
    assert np.array_equal(candidates, similarity[rows])  # the float32 values, bit for bit
    full = [p.index for p in similarity_top_k(similarity, keys, k)]
    assert [int(rows[p.index]) for p in similarity_top_k(candidates, keys[rows], k)] == full
    # MMR chooses among the k most similar here, so the candidates serve it alike.
    full = [p.index for p in mmr(similarity, vectors, keys, 3, fetch=k)]
    assert [int(rows[p.index]) for p in mmr(candidates, vectors[rows], keys[rows], 3, fetch=k)] == full


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 64),
    st.integers(0, 2**32 - 1),
    st.sampled_from([1e-3, 1.0, 30.0]),
)
def test_int16_codes_keep_every_similarity_within_its_bound(dimension, seed, norm) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((200, dimension)).astype(np.float32)
    vectors[::7] *= rng.random((len(vectors[::7]), 1)).astype(np.float32) * norm
    vectors[3] = 0  # a zero row: scale 0, codes 0, bound 0
    query = rng.standard_normal(dimension).astype(np.float32) * np.float32(norm)
    rows = bucketed_selection.compact(vectors)
    exact = bucketed_selection.fast_cpu(vectors, query, np.zeros(200), np.zeros(200), np.arange(200), 1, 1.0).similarity
    estimate = (rows.codes.astype(np.float64) @ query.astype(np.float64)) * rows.scales
    assert (np.abs(estimate - exact) <= rows.bounds * np.linalg.norm(query)).all()
    assert rows.bounds.max() <= 1e-3 * max(1.0, float(np.linalg.norm(vectors, axis=1).max()))


@pytest.mark.parametrize("equal_count", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_selection_from_int16_codes_settles_crowded_edges_cuts_and_ties(seed, equal_count) -> None:
    """Thousands of rows with duplicated vectors, integer complexities (ties everywhere) and
    an outlier that empties the middle intervals, so that buckets are split by cuts."""
    rng = np.random.default_rng(seed)
    n, dimension = 20_000, 48
    centres = rng.standard_normal((12, dimension))
    vectors = centres[rng.integers(12, size=n)] + rng.normal(0, 0.4, size=(n, dimension))
    vectors[rng.integers(n, size=500)] = vectors[rng.integers(n, size=500)]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float32)
    query = vectors[0] + np.float32(0.01)
    query /= np.linalg.norm(query)
    vectors[1] = query  # the outlier: similarity 1
    uncertainty = rng.integers(0, 4, n) / 4
    complexity = rng.integers(1, 6, n).astype(np.float64)
    keys = rng.permutation(n).astype(np.int64)
    rows = bucketed_selection.compact(vectors)
    for k in (2, 5, 8, 13):
        pool = (uncertainty, complexity, keys, k, 1.2, equal_count)
        fast = bucketed_selection.fast_cpu(vectors, query, *pool)
        assert bucketed_selection.fast_cpu_compact(vectors, rows, query, *pool).picks.tolist() == fast.picks.tolist()
        assert bucketed_selection.select_reference(fast.similarity, *pool).tolist() == fast.picks.tolist()


def test_selection_from_int16_codes_breaks_complexity_ties_on_exact_similarity() -> None:
    """Every row equally complex and certain, and each with a twin a hair away: each bucket's
    winner is its most similar row, closer to its twin than the codes can tell apart."""
    rng = np.random.default_rng(0)
    n, dimension = 4000, 32
    base = rng.standard_normal((n // 2, dimension))
    vectors = np.concatenate([base, base + rng.normal(0, 3e-5, size=base.shape)])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    pool = (np.zeros(n), np.ones(n), rng.permutation(n).astype(np.int64), 8, 1.2)
    rows = bucketed_selection.compact(vectors)
    told_apart_by_codes = 0
    for _ in range(30):
        query = vectors[rng.integers(n)] + rng.normal(0, 0.3, dimension).astype(np.float32)
        query /= np.linalg.norm(query)
        fast = bucketed_selection.fast_cpu(vectors, query, *pool)
        estimate = ((rows.codes.astype(np.float64) @ query) * rows.scales).astype(np.float32)
        told_apart_by_codes += bucketed_selection.select_fast(estimate, *pool).tolist() == fast.picks.tolist()
        assert bucketed_selection.fast_cpu_compact(vectors, rows, query, *pool).picks.tolist() == fast.picks.tolist()
    assert told_apart_by_codes < 30  # the case is hard: the estimates alone pick wrong


@settings(max_examples=40, deadline=None)
@given(pools())
def test_selection_triton_equals_the_reference(pool) -> None:
    vectors, query, uncertainty, complexity, keys, k, ratio, equal_count = pool
    result = bucketed_selection.triton_gpu(*pool, device="cpu")
    np.testing.assert_allclose(result.similarity, vectors @ query, atol=1e-5)
    expected = bucketed_selection.select_reference(result.similarity, uncertainty, complexity, keys, k, ratio, equal_count)
    assert result.picks.tolist() == expected.tolist()


def test_selection_splits_a_crowded_interval_over_several_triton_blocks() -> None:
    rng = np.random.default_rng(3)
    n = 3000  # three blocks of 1024; one outlier leaves the middle intervals empty
    similarity = np.concatenate([rng.integers(0, 50, n - 1) / 1000, [1.0]]).astype(np.float32)
    uncertainty, complexity = rng.integers(0, 5, n) / 4, rng.integers(0, 3, n).astype(np.float64)
    keys = rng.permutation(n).astype(np.int64)
    expected = [p.index for p in rose(similarity, uncertainty, complexity, keys, 6, 1.2)]
    fast = bucketed_selection.select_fast(similarity, uncertainty, complexity, keys, 6, 1.2)
    tensors = [torch.from_numpy(a) for a in (similarity, uncertainty, complexity, keys)]
    on_triton = bucketed_selection.select_triton(*tensors, 6, 1.2)
    assert len(expected) == 6
    assert fast.tolist() == expected
    assert on_triton.tolist() == expected


def test_selection_rejects_a_ratio_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        bucketed_selection.select_fast(np.zeros(2, np.float32), np.zeros(2), np.zeros(2), np.arange(2), 2, 0.5)


@st.composite
def logits_batches(draw):
    rows = draw(st.integers(1, 20))
    labels = draw(st.integers(2, 40))
    values = draw(st.lists(st.integers(-8, 8), min_size=rows * labels, max_size=rows * labels))
    logits = (np.array(values, dtype=np.float32) / draw(st.sampled_from([1.0, 4.0]))).reshape(rows, labels)
    previous = np.array(draw(st.lists(st.integers(-1, labels - 1), min_size=rows, max_size=rows)))
    unchanged = np.array(draw(st.lists(st.integers(0, 4), min_size=rows, max_size=rows)))
    return logits, previous, unchanged, draw(st.floats(0.05, 2.0)), draw(st.integers(1, 4))


@settings(max_examples=60, deadline=None)
@given(logits_batches())
def test_exit_test_fast_path_and_triton_equal_the_reference(batch) -> None:
    logits, previous, unchanged, threshold, patience = batch
    reference = exit_rule.reference(logits, previous, unchanged, threshold, patience)
    for decision in (
        exit_rule.fast_cpu(logits, previous, unchanged, threshold, patience),
        exit_rule.triton_gpu(logits, previous, unchanged, threshold, patience, device="cpu"),
    ):
        np.testing.assert_allclose(decision.entropy, reference.entropy, atol=1e-5)
        assert decision.prediction.tolist() == reference.prediction.tolist()
        assert decision.unchanged.tolist() == reference.unchanged.tolist()
        # A row whose entropy sits within float noise of the threshold may fall either side.
        clear = np.abs(reference.entropy - threshold) > 1e-5
        assert decision.exits[clear].tolist() == reference.exits[clear].tolist()


@st.composite
def layer_inputs(draw):
    batch, length = draw(st.integers(1, 3)), draw(st.integers(1, 9))
    lengths = draw(st.lists(st.integers(1, length), min_size=batch, max_size=batch))
    mask = torch.tensor([[1] * n + [0] * (length - n) for n in lengths])
    chosen = torch.tensor(draw(st.lists(st.booleans(), min_size=batch * length, max_size=batch * length)))
    active = (chosen & (mask.reshape(-1) > 0)).nonzero().squeeze(1)
    return draw(st.integers(0, 2**16)), mask, active


@settings(max_examples=30, deadline=None)
@given(layer_inputs())
def test_active_token_layer_fast_path_and_triton_equal_the_reference(inputs) -> None:
    seed, mask, active = inputs
    torch.manual_seed(seed)
    layer = EncoderLayer(hidden=16, heads=4, ffn=32, eps=1e-12).eval()
    hidden = torch.randn(*mask.shape, 16)
    key_bias = key_bias_from_mask(mask)
    with torch.no_grad():
        reference = active_attention.reference(layer, hidden, key_bias, active)
        for result in (
            active_attention.fast_cpu(layer, hidden, key_bias, active),
            active_attention.triton_gpu(layer, hidden, key_bias, active),
        ):
            torch.testing.assert_close(result, reference, atol=1e-5, rtol=0)
    # With gradients on, the layer runs its own differentiable path; it must agree too.
    torch.testing.assert_close(layer(hidden, key_bias, active).detach(), reference, atol=1e-5, rtol=0)
    inactive = torch.ones(hidden.numel() // 16, dtype=torch.bool)
    inactive[active] = False
    assert torch.equal(reference.reshape(-1, 16)[inactive], hidden.reshape(-1, 16)[inactive])
