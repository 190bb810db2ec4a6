import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: extra intra-op threads only add contention on a busy 2-core CI box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
