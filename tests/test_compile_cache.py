"""The loops' on-disk cache survives cell kernels that no longer exist."""
import gc

from numba import njit, types

from numbarnn.kernels.loops import _LiveEntriesIndex, sequence_forward


def test_cache_index_drops_keys_of_vanished_kernels(tmp_path):
    def make_kernel():
        @njit
        def throwaway(x):
            return x
        return throwaway

    live_kernel = make_kernel()
    dead_kernel = make_kernel()
    dead_key = ((types.Dispatcher(dead_kernel), types.float64), "target")
    live_key = ((types.Dispatcher(live_kernel), types.float64), "target")
    del dead_kernel
    gc.collect()
    index = _LiveEntriesIndex(str(tmp_path), "loop", "stamp")
    index._save_index({dead_key: "loop.1.nbc", live_key: "loop.2.nbc"})  # plain numba raises here
    assert list(index._load_index().values()) == ["loop.2.nbc"]


def test_the_loops_use_the_tolerant_index():
    assert isinstance(sequence_forward._cache._cache_file, _LiveEntriesIndex)
